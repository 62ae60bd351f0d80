import { z } from 'zod';

// The facts media processors report about a file. They are kept with the file and shown in its JSON
// (src/routes/schemas.ts builds the file JSON from these), so each kind's facts are declared once here.

/** What the image processor reports (src/media/images.ts). */
export const imageInfoSchema = z.object({
  placeholder: z.string().describe('a tiny WebP of the picture as a data: URI, to show while the real one loads'),
  thumbhash: z.string().describe("the picture's ThumbHash, base64"),
});
export type ImageInfo = z.infer<typeof imageInfoSchema>;

/** What reading a track reports (src/media/audio.ts). */
export const audioInfoSchema = z.object({
  durationMs: z.number().int().optional(),
  codec: z.string().describe('mp3, aac, alac, flac, vorbis, opus, pcm, …'),
  container: z.string().describe('mpeg, adts, mp4, flac, wav, aiff, ogg'),
  bitrate: z.number().int().optional().describe('bits per second, as the parser measured or read it'),
  sampleRate: z.number().int().optional(),
  channels: z.number().int().optional(),
  lossless: z.boolean(),
  title: z.string().optional(),
  artist: z.string().optional(),
  album: z.string().optional(),
  albumArtist: z.string().optional(),
  year: z.number().int().optional(),
  trackNumber: z.number().int().optional(),
  genre: z.string().optional(),
});
export type AudioInfo = z.infer<typeof audioInfoSchema>;

/** The streamable renditions of a track (src/services/audio.ts), or why there are none. */
export const audioRenditionsSchema = z.object({
  available: z.boolean(),
  reason: z.string().optional().describe('why only the original is served'),
  streams: z
    .array(z.object({ n: z.number().int(), codec: z.enum(['opus', 'aac']), made: z.enum(['copied', 'encoded']), bitrate: z.number().int().optional() }))
    .optional(),
});
export type AudioRenditions = z.infer<typeof audioRenditionsSchema>;

/** A track's embedded cover, processed as a square image: its facts and the size of its largest rung. */
export const coverInfoSchema = imageInfoSchema.partial().extend({ width: z.number().int().optional(), height: z.number().int().optional() });
export type CoverInfo = z.infer<typeof coverInfoSchema>;

/** Everything an audio file's info holds once its background job has run. */
export const audioFileInfoSchema = audioInfoSchema.extend({ renditions: audioRenditionsSchema.optional(), cover: coverInfoSchema.optional() });
export type AudioFileInfo = z.infer<typeof audioFileInfoSchema>;

export type MediaInfo = ImageInfo | AudioFileInfo;
