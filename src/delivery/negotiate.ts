import type { Deliverable } from '../db/repository.js';
import { avifVariantName } from '../media/processor.js';

// Format negotiation for /f/<token>/<n>: a ladder rung with an AVIF twin ('6-avif' beside '6') is
// answered in AVIF to clients whose Accept names image/avif, in WebP to everyone else, and both
// answers say `Vary: Accept` so shared caches keep them apart. Rungs without a twin (purposes
// without AVIF, the small rungs, originals) answer as before, with no Vary. Used by the one
// resolver, so Chipmunk alone and nginx's auth answer decide alike.

/**
 * True when Accept lists image/avif with a q above 0. Only the explicit type counts: wildcards
 * (image/*, *\/*) are sent by browsers that cannot decode AVIF too.
 */
export function acceptsAvif(accept: string | undefined): boolean {
  if (!accept || !/image\/avif/i.test(accept)) return false;
  for (const range of accept.split(',')) {
    const [type, ...params] = range.split(';');
    if (type!.trim().toLowerCase() !== 'image/avif') continue;
    const q = params.map((p) => p.trim().toLowerCase()).find((p) => p.startsWith('q='));
    return q === undefined || Number(q.slice(2)) > 0;
  }
  return false;
}

/** Ladder rungs '1'…'6' (not the original '0', not named extras) are the ones that may have a twin. */
const isLadderRung = (name: string) => /^[1-9]\d{0,2}$/.test(name);

export type Negotiated = { target: Deliverable; vary: string | undefined };

/**
 * Picks the deliverable for a request that asked for `found` (already authorised): its AVIF twin when
 * there is one and the client takes AVIF. The signature, if any, was checked against the asked-for name.
 */
export async function negotiateFormat(
  found: Deliverable,
  token: string,
  avif: boolean,
  lookup: (token: string, name: string) => Promise<Deliverable | undefined>,
): Promise<Negotiated> {
  if (!isLadderRung(found.name)) return { target: found, vary: undefined };
  const twin = await lookup(token, avifVariantName(found.name));
  if (!twin) return { target: found, vary: undefined };
  return { target: avif ? twin : found, vary: 'Accept' };
}
