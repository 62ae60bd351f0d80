import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';

// HEIC fixtures made in code, laid out as iPhones write them, for the layouts the corpus lacks
// (we cannot add files to it): a `grid` item of HEVC tiles whose output size crops the last
// row/column, `irot`/`imir` transforms, an EXIF orientation, a Display P3 ICC profile. Each tile
// is coded by Debian's heif-enc (x265); only its HEVC bitstream and its `hvcC` decoder
// configuration are kept, and the container around them is written here after ISO/IEC 23008-12
// (HEIF) and ISO/IEC 14496-12 (ISOBMFF boxes).

const run = promisify(execFile);

export type HeifFixtureOptions = {
  /** The picture as coded, before irot/imir (any input sharp reads); its size is the output size. */
  image: Buffer;
  /** Code it as a grid of square tiles of this side (iPhones: 512); absent: one coded image. */
  tileSize?: number;
  /** How the tiles are put together: a `grid` item (iPhones) or an `iovl` overlay placing each at its offset. */
  derivation?: 'grid' | 'iovl';
  /** `irot`: quarter turns anti-clockwise (HEIF's direction); iPhone orientation 6 is 3. */
  irot?: 0 | 1 | 2 | 3;
  /** `imir` (ISO/IEC 23008-12:2022 semantics, libheif's): 0 exchanges top and bottom, 1 left and right. */
  imir?: 0 | 1;
  /** An `Exif` item (linked to the picture by `cdsc`) carrying this Orientation tag. */
  exifOrientation?: number;
  /** An embedded ICC profile (`colr` of type `prof`) on the primary item, e.g. Display P3. */
  icc?: Buffer;
  /** What the primary item's `ispe` (and a grid's output size) declares instead of the real size: a hostile file. */
  declaredSize?: { width: number; height: number };
  /** What the grid's (or overlay's) description alone declares as its output size (default: declaredSize): a hostile file whose ispe is honest. */
  gridSize?: { width: number; height: number };
  /** heif-enc quality of every tile. */
  quality?: number;
};

/** A HEIC file (ISOBMFF bytes) holding `opts.image` in the requested layout. */
export async function buildHeic(opts: HeifFixtureOptions): Promise<Buffer> {
  const { width, height } = await sharp(opts.image).metadata();
  if (!width || !height) throw new Error('buildHeic: the image has no size');
  const work = await mkdtemp(path.join(tmpdir(), 'chipmunk-heif-builder-'));
  try {
    const side = opts.tileSize;
    const columns = side ? Math.ceil(width / side) : 1;
    const rows = side ? Math.ceil(height / side) : 1;
    const tiles: CodedImage[] = [];
    for (let row = 0; row < rows; row++) {
      for (let column = 0; column < columns; column++) {
        const region = side ? tileRegion(opts.image, { left: column * side, top: row * side, side, width, height }) : sharp(opts.image).png().toBuffer();
        tiles.push(await encodeHevc(await region, work, `tile-${row}-${column}`, opts.quality ?? 90));
      }
    }
    return assembleHeic({ tiles, grid: side ? { rows, columns } : undefined, width, height, ...opts });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * One tile, always a full `side` square: where it runs past the picture (last column/row) the
 * rest is magenta, which the grid's output size must crop away (a decoder that does not crop shows it).
 */
async function tileRegion(image: Buffer, at: { left: number; top: number; side: number; width: number; height: number }): Promise<Buffer> {
  const w = Math.min(at.side, at.width - at.left);
  const h = Math.min(at.side, at.height - at.top);
  const part = await sharp(image).extract({ left: at.left, top: at.top, width: w, height: h }).removeAlpha().png().toBuffer();
  return sharp({ create: { width: at.side, height: at.side, channels: 3, background: { r: 255, g: 0, b: 255 } } })
    .composite([{ input: part, left: 0, top: 0 }])
    .png()
    .toBuffer();
}

/** A coded HEVC image: its decoder configuration box (`hvcC`, whole) and its length-prefixed NAL units. */
export type CodedImage = { hvcC: Buffer; data: Buffer; width: number; height: number };

/** Codes a picture with heif-enc and takes back from its file the primary item's hvcC and bitstream. */
export async function encodeHevc(png: Buffer, work: string, name: string, quality: number): Promise<CodedImage> {
  const input = path.join(work, `${name}.png`);
  const output = path.join(work, `${name}.heic`);
  await writeFile(input, png);
  // No thumbnail, no alpha: the file holds one image item, whose properties are the only ones.
  await run('heif-enc', ['-q', String(quality), '--no-alpha', '-o', output, input]);
  return readCodedImage(await readFile(output));
}

/** The primary item of a single-image HEIF: its hvcC box, its data (one iloc extent) and ispe size. */
export function readCodedImage(file: Buffer): CodedImage {
  const meta = childBoxes(file).find((b) => b.type === 'meta');
  if (!meta) throw new Error('readCodedImage: no meta box');
  const inMeta = childBoxes(meta.body.subarray(4));
  const ipco = childBoxes(inMeta.find((b) => b.type === 'iprp')!.body).find((b) => b.type === 'ipco')!;
  const props = childBoxes(ipco.body);
  const hvcC = props.find((b) => b.type === 'hvcC');
  const ispe = props.find((b) => b.type === 'ispe');
  if (!hvcC || !ispe) throw new Error('readCodedImage: no hvcC/ispe property');
  const iloc = inMeta.find((b) => b.type === 'iloc')!.body;
  const version = iloc[0]!;
  const offsetSize = iloc[4]! >> 4;
  const lengthSize = iloc[4]! & 15;
  const baseOffsetSize = iloc[5]! >> 4;
  const indexSize = version >= 1 ? iloc[5]! & 15 : 0;
  let at = 6;
  const itemCount = iloc.readUInt16BE(at);
  at += 2;
  if (itemCount !== 1) throw new Error(`readCodedImage: ${itemCount} items located, expected 1`);
  at += 2; // item_ID
  if (version >= 1) at += 2; // construction_method: heif-enc writes file offsets (0)
  at += 2; // data_reference_index
  const base = readUint(iloc, at, baseOffsetSize);
  at += baseOffsetSize;
  const extents = iloc.readUInt16BE(at);
  at += 2;
  if (extents !== 1) throw new Error(`readCodedImage: ${extents} extents, expected 1`);
  at += indexSize;
  const offset = base + readUint(iloc, at, offsetSize);
  at += offsetSize;
  const length = readUint(iloc, at, lengthSize);
  return { hvcC: hvcC.whole, data: file.subarray(offset, offset + length), width: ispe.body.readUInt32BE(4), height: ispe.body.readUInt32BE(8) };
}

type Assembly = HeifFixtureOptions & { tiles: CodedImage[]; grid?: { rows: number; columns: number }; width: number; height: number };

/**
 * Writes ftyp, meta (hdlr, pitm, iinf, iref, iprp with ipco/ipma, iloc, idat) and mdat. Item ids:
 * the tiles 1..n (hidden, as iPhones mark them), then the grid, then the Exif item.
 */
export function assembleHeic(a: Assembly): Buffer {
  const declared = a.declaredSize ?? { width: a.width, height: a.height };
  const tileIds = a.tiles.map((_, i) => i + 1);
  const gridId = a.grid ? a.tiles.length + 1 : undefined;
  const primaryId = gridId ?? 1;
  const exifId = a.exifOrientation === undefined ? undefined : primaryId + 1;

  // Properties, 1-based in ipma order. Tiles share one ispe; every tile keeps its own hvcC.
  const properties: Buffer[] = [];
  const property = (box: Buffer) => properties.push(box);
  const associations = new Map<number, Array<{ index: number; essential: boolean }>>();
  const associate = (item: number, index: number, essential: boolean) => associations.set(item, [...(associations.get(item) ?? []), { index, essential }]);

  const tileIspe = a.grid ? (property(ispe(a.tiles[0]!.width, a.tiles[0]!.height)), properties.length) : undefined;
  a.tiles.forEach((tile, i) => {
    property(tile.hvcC);
    associate(tileIds[i]!, properties.length, true);
    if (tileIspe) associate(tileIds[i]!, tileIspe, false);
  });
  // The primary item's own properties: its size, colour profile, then the transforms in the order they apply.
  property(ispe(declared.width, declared.height));
  associate(primaryId, properties.length, false);
  if (a.icc) {
    property(box('colr', Buffer.concat([Buffer.from('prof', 'latin1'), a.icc])));
    associate(primaryId, properties.length, false);
  }
  if (a.irot) {
    property(box('irot', Buffer.from([a.irot & 3])));
    associate(primaryId, properties.length, true);
  }
  if (a.imir !== undefined) {
    property(box('imir', Buffer.from([a.imir & 1])));
    associate(primaryId, properties.length, true);
  }

  const infe = (id: number, type: string, hidden: boolean) =>
    fullBox('infe', 2, hidden ? 1 : 0, Buffer.concat([u16(id), u16(0), Buffer.from(type, 'latin1'), Buffer.from([0])]));
  const derivation = a.derivation ?? 'grid';
  const infos = [
    ...tileIds.map((id) => infe(id, 'hvc1', gridId !== undefined)),
    ...(gridId ? [infe(gridId, derivation, false)] : []),
    ...(exifId ? [infe(exifId, 'Exif', false)] : []),
  ];

  const references: Buffer[] = [];
  if (gridId) references.push(box('dimg', Buffer.concat([u16(gridId), u16(tileIds.length), ...tileIds.map(u16)])));
  if (exifId) references.push(box('cdsc', Buffer.concat([u16(exifId), u16(1), u16(primaryId)])));

  // The grid's description lives in idat (as on iPhones); 32-bit output sizes when 16 bits cannot hold them.
  const output = a.gridSize ?? declared;
  const wide = output.width > 0xffff || output.height > 0xffff;
  const field = wide ? u32 : u16;
  const side = a.tiles[0]!.width;
  const gridData = !a.grid
    ? undefined
    : derivation === 'grid'
      ? Buffer.concat([Buffer.from([0, wide ? 1 : 0, a.grid.rows - 1, a.grid.columns - 1]), field(output.width), field(output.height)])
      : // ImageOverlay: version, flags, an opaque black canvas (RGBA, 16 bits each), its size, each input's offset.
        Buffer.concat([
          Buffer.from([0, wide ? 1 : 0]),
          u16(0),
          u16(0),
          u16(0),
          u16(0xffff),
          field(output.width),
          field(output.height),
          ...a.tiles.map((_, i) => Buffer.concat([field((i % a.grid!.columns) * side), field(Math.floor(i / a.grid!.columns) * side)])),
        ]);
  const exifData = exifId ? exifPayload(a.exifOrientation!) : undefined;

  // mdat holds the tiles, then the Exif; iloc points at them by absolute file offsets, known once meta's size is.
  const mdatParts = [...a.tiles.map((t) => t.data), ...(exifData ? [exifData] : [])];
  const located = [...tileIds, ...(exifId ? [exifId] : [])];
  const ftyp = box('ftyp', Buffer.concat(['heic', '\0\0\0\0', 'mif1', 'heic', 'miaf'].map((s) => Buffer.from(s, 'latin1'))));

  const metaFor = (mdatDataStart: number) => {
    const entries: Buffer[] = [];
    let offset = mdatDataStart;
    mdatParts.forEach((part, i) => {
      entries.push(Buffer.concat([u16(located[i]!), u16(0), u16(0), u16(1), u32(offset), u32(part.length)]));
      offset += part.length;
    });
    if (gridId && gridData) entries.push(Buffer.concat([u16(gridId), u16(1), u16(0), u16(1), u32(0), u32(gridData.length)]));
    // iloc version 1 (construction methods), offset and length 4 bytes, no base offset, no index.
    const iloc = fullBox('iloc', 1, 0, Buffer.concat([Buffer.from([0x44, 0x00]), u16(entries.length), ...entries]));
    const ipma = fullBox(
      'ipma',
      0,
      0,
      Buffer.concat([
        u32(associations.size),
        ...[...associations].map(([item, list]) =>
          Buffer.concat([u16(item), Buffer.from([list.length, ...list.map((p) => (p.essential ? 0x80 : 0) | p.index)])]),
        ),
      ]),
    );
    return fullBox(
      'meta',
      0,
      0,
      Buffer.concat([
        fullBox('hdlr', 0, 0, Buffer.concat([u32(0), Buffer.from('pict', 'latin1'), Buffer.alloc(12), Buffer.from([0])])),
        fullBox('pitm', 0, 0, u16(primaryId)),
        fullBox('iinf', 0, 0, Buffer.concat([u16(infos.length), ...infos])),
        ...(references.length ? [fullBox('iref', 0, 0, Buffer.concat(references))] : []),
        box('iprp', Buffer.concat([box('ipco', Buffer.concat(properties)), ipma])),
        iloc,
        ...(gridData ? [box('idat', gridData)] : []),
      ]),
    );
  };
  if (properties.length > 127) throw new Error('assembleHeic: ipma with 7-bit property indices holds at most 127 properties');
  const metaSize = metaFor(0).length;
  const meta = metaFor(ftyp.length + metaSize + 8);
  return Buffer.concat([ftyp, meta, box('mdat', Buffer.concat(mdatParts))]);
}

/** An Exif item's payload: the offset to the TIFF header (0), then a big-endian TIFF with one IFD entry, Orientation. */
function exifPayload(orientation: number): Buffer {
  const entry = Buffer.concat([u16(0x0112), u16(3), u32(1), u16(orientation), u16(0)]);
  return Buffer.concat([u32(0), Buffer.from('MM\0*', 'latin1'), u32(8), u16(1), entry, u32(0)]);
}

const ispe = (width: number, height: number) => fullBox('ispe', 0, 0, Buffer.concat([u32(width), u32(height)]));

function box(type: string, body: Buffer): Buffer {
  return Buffer.concat([u32(8 + body.length), Buffer.from(type, 'latin1'), body]);
}
function fullBox(type: string, version: number, flags: number, body: Buffer): Buffer {
  return box(type, Buffer.concat([Buffer.from([version, (flags >> 16) & 255, (flags >> 8) & 255, flags & 255]), body]));
}
function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}
function readUint(b: Buffer, at: number, size: number): number {
  let n = 0;
  for (let i = 0; i < size; i++) n = n * 256 + b[at + i]!;
  return n;
}

/** The boxes directly inside `b` (32-bit sizes only: all a fixture's boxes are small). */
export function childBoxes(b: Buffer): Array<{ type: string; body: Buffer; whole: Buffer }> {
  const out: Array<{ type: string; body: Buffer; whole: Buffer }> = [];
  for (let at = 0; at + 8 <= b.length;) {
    const size = b.readUInt32BE(at);
    if (size < 8 || at + size > b.length) break;
    out.push({ type: b.toString('latin1', at + 4, at + 8), body: b.subarray(at + 8, at + size), whole: b.subarray(at, at + size) });
    at += size;
  }
  return out;
}
