// Picture-quality measures on raw 8-bit pixels, shared by the variants bench's tables.

export function luma(rgb: Buffer): Float64Array {
  const out = new Float64Array(rgb.length / 3);
  for (let i = 0; i < out.length; i++) out[i] = 0.299 * rgb[i * 3]! + 0.587 * rgb[i * 3 + 1]! + 0.114 * rgb[i * 3 + 2]!;
  return out;
}

export function psnr(a: Buffer, b: Buffer): number {
  let se = 0;
  for (let i = 0; i < a.length; i++) se += (a[i]! - b[i]!) ** 2;
  return se === 0 ? 99 : 10 * Math.log10((255 * 255 * a.length) / se);
}

/** Mean SSIM over win × win windows (stride win/2); tiny rungs use one window the size of the image. */
export function ssim(a: Float64Array, b: Float64Array, width: number, height: number): number {
  const win = Math.max(1, Math.min(8, width, height));
  const step = Math.max(1, win >> 1);
  const c1 = (0.01 * 255) ** 2;
  const c2 = (0.03 * 255) ** 2;
  const count = win * win;
  let sum = 0;
  let windows = 0;
  for (let y = 0; y + win <= height; y += step) {
    for (let x = 0; x + win <= width; x += step) {
      let ma = 0;
      let mb = 0;
      for (let j = 0; j < win; j++)
        for (let i = 0; i < win; i++) {
          ma += a[(y + j) * width + x + i]!;
          mb += b[(y + j) * width + x + i]!;
        }
      ma /= count;
      mb /= count;
      let va = 0;
      let vb = 0;
      let cov = 0;
      for (let j = 0; j < win; j++)
        for (let i = 0; i < win; i++) {
          const da = a[(y + j) * width + x + i]! - ma;
          const db = b[(y + j) * width + x + i]! - mb;
          va += da * da;
          vb += db * db;
          cov += da * db;
        }
      const norm = Math.max(1, count - 1);
      sum += ((2 * ma * mb + c1) * ((2 * cov) / norm + c2)) / ((ma * ma + mb * mb + c1) * ((va + vb) / norm + c2));
      windows++;
    }
  }
  return windows ? sum / windows : 1;
}
