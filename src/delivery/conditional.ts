// Conditional and range requests, as nginx's static module answers them, so both delivery paths
// agree: If-None-Match / If-Modified-Since (304), one byte range with If-Range (206 / 416).

/** If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2). */
export function notModified(ifNoneMatch: string | undefined, ifModifiedSince: string | undefined, etag: string, mtime: number): boolean {
  if (ifNoneMatch !== undefined) {
    return ifNoneMatch.split(',').some((tag) => {
      const t = tag.trim();
      return t === '*' || t.replace(/^W\//, '') === etag;
    });
  }
  if (ifModifiedSince !== undefined) {
    const since = Date.parse(ifModifiedSince);
    return Number.isFinite(since) && Math.floor(since / 1000) >= mtime;
  }
  return false;
}

/**
 * One byte range (music seeking needs no more); several ranges, or a stale If-Range, get the
 * whole file as nginx does with max_ranges 1.
 */
export function usableRange(
  header: string | undefined,
  ifRange: string | undefined,
  etag: string,
  lastModified: string,
  size: number,
): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  if (ifRange !== undefined && ifRange !== etag && ifRange !== lastModified) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return [start, end];
}
