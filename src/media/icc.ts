// Reads just enough of an ICC profile to tell whether it is an sRGB profile. Photos tagged with
// sRGB (many cameras embed "sRGB IEC61966-2.1") need no colour conversion to come out sRGB, and
// skipping libvips' sRGB → sRGB transform halves their decode time with identical pixels.

/** True for an RGB profile whose description names sRGB; false for anything else or anything unreadable. */
export function isSrgbProfile(icc: Buffer | undefined): boolean {
  if (!icc || icc.length < 132) return false;
  if (icc.toString('latin1', 16, 20) !== 'RGB ') return false;
  const description = profileDescription(icc);
  return description !== undefined && /\bsRGB\b/.test(description);
}

/** The 'desc' tag's text: v2 textDescriptionType (ASCII) or v4 multiLocalizedUnicodeType (first record). */
export function profileDescription(icc: Buffer): string | undefined {
  const tagCount = icc.readUInt32BE(128);
  for (let i = 0; i < tagCount; i++) {
    const entry = 132 + i * 12;
    if (entry + 12 > icc.length) return undefined;
    if (icc.toString('latin1', entry, entry + 4) !== 'desc') continue;
    const offset = icc.readUInt32BE(entry + 4);
    const size = icc.readUInt32BE(entry + 8);
    if (offset + size > icc.length || size < 12) return undefined;
    const type = icc.toString('latin1', offset, offset + 4);
    if (type === 'desc') {
      const length = icc.readUInt32BE(offset + 8);
      if (12 + length > size) return undefined;
      return icc.toString('latin1', offset + 12, offset + 12 + length).replace(/\0+$/, '');
    }
    if (type === 'mluc' && size >= 28) {
      const length = icc.readUInt32BE(offset + 20);
      if (length % 2 !== 0) return undefined;
      const start = offset + icc.readUInt32BE(offset + 24);
      if (start + length > offset + size) return undefined;
      return Buffer.from(icc.subarray(start, start + length))
        .swap16()
        .toString('utf16le');
    }
    return undefined;
  }
  return undefined;
}
