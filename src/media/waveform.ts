// Waveform peaks in the BBC audiowaveform JSON format (version 2, one channel, 8-bit min/max pairs),
// reduced on the fly from the mono 16-bit PCM ffmpeg writes to a pipe during the rendition decode.
// https://github.com/bbc/audiowaveform/blob/master/doc/DataFormat.md
//
// The track's length is unknown until the decode ends, so peaks are first kept at a fine resolution
// (1 sample per bucket, doubled whenever FINE_BUCKETS fill up, adjacent buckets merged) and grouped at
// the end. min/max of a group of buckets is exactly min/max of their samples, so nothing is approximated.
//
// Resulting length (documented in the README): samples_per_pixel = fine · ceil(buckets / MAX_POINTS),
// length = ceil(totalSamples / samples_per_pixel) ≤ MAX_POINTS; at least 1,000 points once the track has
// 2,000 samples, and at least 1,886 once it has 65,536 (≈1.5 s at 44.1 kHz).

export const MAX_POINTS = 2000;
const FINE_BUCKETS = 65_536;

export type WaveformJson = {
  version: 2;
  channels: 1;
  sample_rate: number;
  samples_per_pixel: number;
  bits: 8;
  length: number;
  data: number[];
};

export class PeakReducer {
  private readonly mins = new Int16Array(FINE_BUCKETS);
  private readonly maxs = new Int16Array(FINE_BUCKETS);
  /** Samples per fine bucket, a power of two. */
  private fine = 1;
  /** Full fine buckets so far. */
  private buckets = 0;
  /** The bucket being filled. */
  private curMin = 32767;
  private curMax = -32768;
  private curCount = 0;
  private leftover: number | undefined;
  totalSamples = 0;

  /** Feeds signed 16-bit little-endian mono samples; chunks may split a sample. */
  push(chunk: Buffer): void {
    let offset = 0;
    if (this.leftover !== undefined && chunk.length > 0) {
      this.addRun(Int16Array.of((chunk[0]! << 8) | this.leftover));
      this.leftover = undefined;
      offset = 1;
    }
    const count = (chunk.length - offset) >> 1;
    if (count > 0) {
      const start = chunk.byteOffset + offset;
      // A view when aligned (Node's pipe chunks are), else one copy; every platform Node runs on is little-endian.
      const samples =
        start % 2 === 0
          ? new Int16Array(chunk.buffer, start, count)
          : new Int16Array(Uint8Array.prototype.slice.call(chunk, offset, offset + count * 2).buffer);
      this.addRun(samples);
    }
    const end = offset + count * 2;
    if (end < chunk.length) this.leftover = chunk[end]!;
  }

  private addRun(samples: Int16Array): void {
    const n = samples.length;
    let min = this.curMin;
    let max = this.curMax;
    let filled = this.curCount;
    let i = 0;
    while (i < n) {
      // Up to the end of the current bucket without a per-sample bucket check: this loop is the hot path.
      const stop = Math.min(n, i + (this.fine - filled));
      filled += stop - i;
      for (; i < stop; i++) {
        const s = samples[i]!;
        if (s < min) min = s;
        if (s > max) max = s;
      }
      if (filled === this.fine) {
        this.closeBucket(min, max);
        min = 32767;
        max = -32768;
        filled = 0;
      }
    }
    this.curMin = min;
    this.curMax = max;
    this.curCount = filled;
    this.totalSamples += n;
  }

  private closeBucket(min: number, max: number): void {
    this.mins[this.buckets] = min;
    this.maxs[this.buckets] = max;
    this.buckets++;
    if (this.buckets === FINE_BUCKETS) {
      // Halve the resolution: merge adjacent buckets. The bucket being filled is empty here.
      for (let i = 0; i < FINE_BUCKETS / 2; i++) {
        this.mins[i] = Math.min(this.mins[2 * i]!, this.mins[2 * i + 1]!);
        this.maxs[i] = Math.max(this.maxs[2 * i]!, this.maxs[2 * i + 1]!);
      }
      this.buckets = FINE_BUCKETS / 2;
      this.fine *= 2;
    }
  }

  /** The peaks; undefined when no sample was decoded. */
  finish(sampleRate: number): WaveformJson | undefined {
    if (this.totalSamples === 0) return undefined;
    const n = this.buckets + (this.curCount > 0 ? 1 : 0);
    const mins = this.mins.slice(0, n);
    const maxs = this.maxs.slice(0, n);
    if (this.curCount > 0) {
      mins[n - 1] = this.curMin;
      maxs[n - 1] = this.curMax;
    }
    const group = Math.ceil(n / MAX_POINTS);
    const length = Math.ceil(n / group);
    const data: number[] = new Array(length * 2);
    for (let p = 0; p < length; p++) {
      let min = 32767;
      let max = -32768;
      for (let i = p * group, end = Math.min(n, i + group); i < end; i++) {
        if (mins[i]! < min) min = mins[i]!;
        if (maxs[i]! > max) max = maxs[i]!;
      }
      // audiowaveform's 16 → 8-bit conversion: an arithmetic shift, so -32768 → -128 and 32767 → 127.
      data[2 * p] = min >> 8;
      data[2 * p + 1] = max >> 8;
    }
    return { version: 2, channels: 1, sample_rate: sampleRate, samples_per_pixel: this.fine * group, bits: 8, length, data };
  }
}
