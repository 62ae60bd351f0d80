import { errors } from '../errors.js';

// A JSON upload body read as it streams: `{ "userId": …, "purpose": …, "filename": …, "data": "<base64>" }`.
// The small fields are collected; the `data` string is decoded from base64 as its characters arrive,
// so the body is never held whole (memory: one socket chunk, its decoded bytes and < 4 carried
// characters). The caller is told when `data` starts (to decide admission with the fields seen so
// far) and receives the decoded bytes chunk by chunk.

/** Longest value of a field other than `data`. */
const MAX_FIELD_CHARS = 4096;
/** Longest `data:<type>;base64,` prefix. */
const MAX_PREFIX_CHARS = 256;

type State = 'start' | 'key-or-end' | 'key' | 'colon' | 'value' | 'string' | 'scalar' | 'comma-or-end' | 'done';

export type JsonBase64Events = {
  /** `data` begins; `fields` are those before it. Returns nothing; may throw to refuse. */
  onDataStart(fields: Record<string, string>, mimeType: string | null): void;
};

const invalid = (message: string) => errors.invalidInput(message);
const notBase64 = () => invalid('The "data" field is not valid base64.');

export class JsonBase64Reader {
  private state: State = 'start';
  private key = '';
  private text = '';
  private escape: '' | '\\' | `u${string}` = '';
  private readonly fields: Record<string, string> = {};
  private inData = false;
  private dataStarted = false;
  private prefix: string | undefined = '';
  private carry = '';
  private padding = 0;
  private chars = 0;
  /** Decoded bytes so far. */
  decoded = 0;
  private sawData = false;

  constructor(private readonly events: JsonBase64Events) {}

  /** Feeds one chunk of the body (UTF-8); returns the bytes it decoded. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    // Only field values (names, user ids, filenames) may be non-ASCII; `data` is ASCII by definition.
    const s = chunk.toString('latin1');
    let i = 0;
    while (i < s.length) {
      if (this.inData) {
        i = this.dataChars(s, i, out);
        continue;
      }
      const ch = s[i]!;
      i++;
      switch (this.state) {
        case 'start':
          if (isSpace(ch)) break;
          if (ch !== '{') throw invalid('The request body must be a JSON object.');
          this.state = 'key-or-end';
          break;
        case 'key-or-end':
        case 'comma-or-end':
          if (isSpace(ch)) break;
          if (ch === '}') this.state = 'done';
          else if (this.state === 'comma-or-end' && ch === ',') this.state = 'key-or-end';
          else if (this.state === 'key-or-end' && ch === '"') {
            this.state = 'key';
            this.text = '';
          } else throw invalid('The request body must be JSON.');
          break;
        case 'key':
          if (this.stringChar(ch)) {
            this.key = utf8(this.text);
            this.state = 'colon';
          }
          break;
        case 'colon':
          if (isSpace(ch)) break;
          if (ch !== ':') throw invalid('The request body must be JSON.');
          this.state = 'value';
          break;
        case 'value':
          if (isSpace(ch)) break;
          if (ch === '"') {
            this.text = '';
            if (this.key === 'data') {
              if (this.sawData) throw invalid('The "data" field appears twice.');
              this.sawData = true;
              this.inData = true;
            } else this.state = 'string';
          } else if (ch === '{' || ch === '[') {
            throw invalid(`The field "${this.key.slice(0, 32)}" must be a string.`);
          } else {
            this.text = ch;
            this.state = 'scalar';
          }
          break;
        case 'string':
          if (this.stringChar(ch)) {
            if (this.key in this.fields) throw invalid(`The field "${this.key.slice(0, 32)}" appears twice.`);
            this.fields[this.key] = utf8(this.text);
            this.state = 'comma-or-end';
          }
          break;
        case 'scalar':
          if (ch === ',' || ch === '}' || isSpace(ch)) {
            // Numbers, true, false, null: not a field we read, but valid JSON.
            if (!/^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)$/.test(this.text)) throw invalid('The request body must be JSON.');
            if (['userId', 'purpose', 'filename'].includes(this.key) && this.text !== 'null') throw invalid(`The field "${this.key}" must be a string.`);
            this.state = ch === ',' ? 'key-or-end' : ch === '}' ? 'done' : 'comma-or-end';
          } else if (this.text.length > 64) throw invalid('The request body must be JSON.');
          else this.text += ch;
          break;
        case 'done':
          if (!isSpace(ch)) throw invalid('The request body must be one JSON object.');
          break;
      }
    }
    return out;
  }

  /** After the last chunk: the body must have been a whole object with a complete `data`. */
  end(): Buffer[] {
    if (this.state !== 'done' || this.inData) throw invalid('The request body must be JSON (it ended early).');
    if (!this.sawData) throw invalid('The request body has no "data" field.');
    const out: Buffer[] = [];
    if (this.carry.length === 1 || (this.padding > 0 && (this.chars + this.padding) % 4 !== 0))
      throw invalid('The "data" field is not valid base64 (wrong length).');
    if (this.carry.length > 0) out.push(this.decode(this.carry));
    this.carry = '';
    return out;
  }

  /** One character of a JSON string outside `data`; true at its closing quote. */
  private stringChar(ch: string): boolean {
    if (this.escape === '\\') {
      this.escape = '';
      if (ch === 'u') {
        this.escape = 'u';
        return false;
      }
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (!(ch in simple)) throw invalid('The request body must be JSON (a bad escape).');
      this.text += latin1(simple[ch]!);
    } else if (this.escape.startsWith('u')) {
      this.escape = `u${this.escape.slice(1)}${ch}`;
      if (this.escape.length === 5) {
        const code = Number.parseInt(this.escape.slice(1), 16);
        if (!/^u[0-9a-f]{4}$/i.test(this.escape)) throw invalid('The request body must be JSON (a bad escape).');
        this.text += latin1(String.fromCharCode(code));
        this.escape = '';
      }
    } else if (ch === '\\') this.escape = '\\';
    else if (ch === '"') return true;
    else if (ch < ' ') throw invalid('The request body must be JSON (a control character in a string).');
    else this.text += ch;
    if (this.text.length > MAX_FIELD_CHARS) throw invalid(`The field "${this.key.slice(0, 32)}" is too long.`);
    return false;
  }

  /** Consumes `data` characters from s[i…]; returns where it stopped (past the closing quote, or the end). */
  private dataChars(s: string, i: number, out: Buffer[]): number {
    // The data: URI prefix, if any, is read first (it names the type admission checks).
    if (this.prefix !== undefined) {
      while (i < s.length && this.prefix !== undefined) {
        const ch = s[i]!;
        if (ch === '\\' || ch === '"') {
          this.startData(this.prefix.startsWith('data:') ? undefined : this.prefix, out);
          break;
        }
        this.prefix += ch;
        i++;
        if (this.prefix.length >= 5 && !this.prefix.startsWith('data:')) this.startData(this.prefix, out);
        else if (this.prefix.startsWith('data:') && ch === ',') this.startData(undefined, out);
        else if (this.prefix.length > MAX_PREFIX_CHARS) throw invalid('A "data:" URI must be base64: data:<type>;base64,<data>.');
      }
      if (this.prefix !== undefined) return i;
    }
    let run = '';
    for (; i < s.length; i++) {
      const ch = s[i]!;
      if (this.escape) {
        // Escapes inside base64 are whitespace (\n, \r, \t) or a solidus (\/).
        this.escape = '';
        if (ch === '/') run += '/';
        else if (ch !== 'n' && ch !== 'r' && ch !== 't') throw notBase64();
        continue;
      }
      if (ch === '\\') {
        this.escape = '\\';
        continue;
      }
      if (ch === '"') {
        this.feed(run, out);
        this.inData = false;
        this.state = 'comma-or-end';
        return i + 1;
      }
      if (ch === ' ' || ch === '\n' || ch === '\r' || ch === '\t') continue;
      run += ch;
    }
    this.feed(run, out);
    return i;
  }

  private startData(leftover: string | undefined, out: Buffer[]): void {
    let mimeType: string | null = null;
    if (leftover === undefined) {
      const header = this.prefix!.slice(5, -1);
      const params = header.split(';').map((p) => p.trim());
      if (!this.prefix!.endsWith(',') || !params.slice(1).some((p) => p.toLowerCase() === 'base64')) {
        throw invalid('A "data:" URI must be base64: data:<type>;base64,<data>.');
      }
      mimeType = params[0]?.toLowerCase() || null;
    }
    this.prefix = undefined;
    if (!this.dataStarted) {
      this.dataStarted = true;
      this.events.onDataStart(Object.fromEntries(Object.entries(this.fields)), mimeType);
    }
    if (leftover) this.feed(leftover.replace(/\s+/g, ''), out);
  }

  /** Base64 characters: validated, decoded four at a time. */
  private feed(run: string, out: Buffer[]): void {
    if (!run) return;
    if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(run) || (this.padding > 0 && run.length > 0 && !/^=*$/.test(run))) throw notBase64();
    const pad = /=*$/.exec(run)![0].length;
    this.padding += pad;
    if (this.padding > 2) throw notBase64();
    const body = this.carry + run.slice(0, run.length - pad);
    this.chars += run.length - pad;
    const whole = body.length - (body.length % 4);
    this.carry = body.slice(whole);
    if (whole > 0) out.push(this.decode(body.slice(0, whole)));
  }

  private decode(chars: string): Buffer {
    const bytes = Buffer.from(chars, 'base64');
    this.decoded += bytes.length;
    return bytes;
  }
}

const isSpace = (ch: string) => ch === ' ' || ch === '\n' || ch === '\r' || ch === '\t';
/** Strings are gathered as latin1 code units of their UTF-8 bytes, then decoded once. */
const utf8 = (latin1Text: string) => Buffer.from(latin1Text, 'latin1').toString('utf8');
const latin1 = (text: string) => Buffer.from(text, 'utf8').toString('latin1');
