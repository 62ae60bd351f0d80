// Conditional and range requests, as nginx's static module answers them (the rendered config keeps
// its defaults: `if_modified_since exact`, `max_ranges 1`), so both delivery paths agree:
// If-Match / If-Unmodified-Since (412), If-None-Match / If-Modified-Since (304), one byte range
// with If-Range (206 / 416). Where nginx is stricter than RFC 9110 allows, the answer is the whole
// file (200), which is always a correct answer, only a less economical one.

const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const imfFixdate = /^[A-Za-z]{3}, (\d{2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const rfc850 = /^[A-Za-z]{6,9}, (\d{2})-([A-Za-z]{3})-(\d{2}) (\d{2}):(\d{2}):(\d{2}) GMT$/;
const asctime = /^[A-Za-z]{3} ([A-Za-z]{3}) ( \d|\d{2}) (\d{2}):(\d{2}):(\d{2}) (\d{4})$/;

/**
 * An HTTP-date in any of RFC 9110's three forms (§5.6.7, all in GMT), in Unix seconds; undefined for
 * anything else. Not Date.parse: it reads the asctime form in the server's local time zone.
 */
export function parseHttpDate(value: string): number | undefined {
  const text = value.trim();
  let parts: [day: string, month: string, year: string, h: string, m: string, s: string] | undefined;
  let m: RegExpExecArray | null;
  if ((m = imfFixdate.exec(text))) parts = [m[1]!, m[2]!, m[3]!, m[4]!, m[5]!, m[6]!];
  else if ((m = rfc850.exec(text))) {
    // Two-digit years: 70–99 are 19xx, as nginx reads them (RFC 9110 asks for the nearest past century).
    const yy = Number(m[3]);
    parts = [m[1]!, m[2]!, String(yy < 70 ? 2000 + yy : 1900 + yy), m[4]!, m[5]!, m[6]!];
  } else if ((m = asctime.exec(text))) parts = [m[2]!.trim(), m[1]!, m[6]!, m[3]!, m[4]!, m[5]!];
  if (!parts) return undefined;
  const [day, month, year, hour, minute, second] = parts.map((p, i) => (i === 1 ? months.indexOf(p) : Number(p))) as number[] as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (month < 0 || hour > 23 || minute > 59 || second > 59) return undefined;
  const ms = Date.UTC(year, month, day, hour, minute, second);
  // Rejects 31 Feb and the like (Date.UTC would roll them into March).
  if (new Date(ms).getUTCDate() !== day) return undefined;
  return ms / 1000;
}

/** Whether an If-Match / If-None-Match list names `etag` (strong: exactly; weak: W/ ignored), or is `*`. */
function listMatches(list: string, etag: string, weak: boolean): boolean {
  return list.split(',').some((tag) => {
    const t = tag.trim();
    return t === '*' || (weak ? t.replace(/^W\//, '') : t) === etag;
  });
}

/**
 * If-Match and If-Unmodified-Since: false means 412. nginx checks them before anything else, and an
 * If-Unmodified-Since that is not a date fails there too.
 */
export function preconditionsHold(ifMatch: string | undefined, ifUnmodifiedSince: string | undefined, etag: string, mtime: number): boolean {
  if (ifUnmodifiedSince !== undefined) {
    const since = parseHttpDate(ifUnmodifiedSince);
    if (since === undefined || since < mtime) return false;
  }
  if (ifMatch !== undefined && !listMatches(ifMatch, etag, false)) return false;
  return true;
}

/**
 * 304 when every validator sent says "unchanged": If-None-Match naming the ETag (weak comparison),
 * If-Modified-Since naming exactly the Last-Modified second (nginx's `if_modified_since exact`).
 * Unlike RFC 9110 §13.2.2, a later If-Modified-Since, or a matching If-None-Match beside an
 * If-Modified-Since that does not match, gets the whole file, as from nginx.
 */
export function notModified(ifNoneMatch: string | undefined, ifModifiedSince: string | undefined, etag: string, mtime: number): boolean {
  if (ifNoneMatch === undefined && ifModifiedSince === undefined) return false;
  if (ifModifiedSince !== undefined && parseHttpDate(ifModifiedSince) !== mtime) return false;
  if (ifNoneMatch !== undefined && !listMatches(ifNoneMatch, etag, true)) return false;
  return true;
}

/**
 * If-Range (RFC 9110 §13.1.5): an entity tag must be the ETag itself (strong: a W/ tag never
 * matches), a date exactly the Last-Modified second. Otherwise the range is not applied.
 */
export function ifRangeHolds(ifRange: string, etag: string, mtime: number): boolean {
  const value = ifRange.trim();
  if (value.endsWith('"')) return value === etag;
  return parseHttpDate(value) === mtime;
}

/**
 * One byte range (music seeking needs no more); several ranges, or a stale If-Range, get the
 * whole file as nginx does with max_ranges 1.
 */
export function usableRange(
  header: string | undefined,
  ifRange: string | undefined,
  etag: string,
  mtime: number,
  size: number,
): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  if (ifRange !== undefined && !ifRangeHolds(ifRange, etag, mtime)) return undefined;
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
