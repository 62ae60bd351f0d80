import { customAlphabet } from 'nanoid';

// Lower-case letters and digits only, so ids and tokens are safe as folder names on
// case-insensitive file systems and in URLs without escaping.
const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';

/** 24 characters of a 36-letter alphabet: 124 random bits. */
export const newFileId = customAlphabet(alphabet, 24);

/** Delivery tokens are distinct from ids and longer: 32 characters, 165 random bits. */
export const newDeliveryToken = customAlphabet(alphabet, 32);

export const fileIdPattern = /^[0-9a-z]{24}$/;
