import { parseFile, type IPicture } from 'music-metadata';

// One tag read in a child of its own (started by audio-tags.ts through runBounded): music-metadata
// builds its object tree from the user's bytes, and a crafted file (an M4A of half a million nested
// boxes) makes that tree gigabytes large; here it meets the child's heap and memory caps, not the
// server's. Prints one JSON line: the facts audio.ts reads, and the chosen cover in base64.

export type TagsJson = {
  format: {
    container?: string;
    codec?: string;
    hasAudio?: boolean;
    sampleRate?: number;
    duration?: number;
    bitrate?: number;
    numberOfChannels?: number;
    lossless?: boolean;
  };
  common: { title?: string; artist?: string; album?: string; albumartist?: string; year?: number; trackNo?: number | null; genre?: string[] };
  cover?: { format: string; base64: string };
};

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: audio-tags-child <file>\n');
  process.exit(2);
}

try {
  let meta = await parseFile(file, { skipCovers: false, duration: false });
  // Without a duration in the headers the length is measured (a scan of the frames): the duration
  // limit needs it before any decoding.
  if (!meta.format.duration) meta = await parseFile(file, { skipCovers: false, duration: true });
  const { format, common } = meta;
  const cover = pickCover(common.picture);
  const out: TagsJson = {
    format: {
      container: format.container,
      codec: format.codec,
      hasAudio: format.hasAudio,
      sampleRate: format.sampleRate,
      duration: format.duration,
      bitrate: format.bitrate,
      numberOfChannels: format.numberOfChannels,
      lossless: format.lossless,
    },
    common: {
      title: common.title,
      artist: common.artist,
      album: common.album,
      albumartist: common.albumartist,
      year: common.year,
      trackNo: common.track?.no,
      genre: common.genre,
    },
    ...(cover ? { cover: { format: cover.format, base64: Buffer.from(cover.data).toString('base64') } } : {}),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
} catch (err) {
  // Exit code 3: the parser refused the bytes (the message is the cause a person reads).
  process.stderr.write(
    `${String((err as Error)?.message ?? err)
      .replace(/\s+/g, ' ')
      .slice(0, 300)}\n`,
  );
  process.exit(3);
}

function pickCover(pictures: IPicture[] | undefined): IPicture | undefined {
  if (!pictures?.length) return undefined;
  const front = pictures.find((p) => p.type === 'Cover (front)') ?? pictures.find((p) => !p.type) ?? pictures[0]!;
  return front.data.length > 0 ? front : undefined;
}
