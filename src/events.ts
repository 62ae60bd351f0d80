import { EventEmitter } from 'node:events';
import type { FileRow } from './db/schema.js';

// Domain events other parts react to (webhooks, metrics) without the services knowing them.

export type ChipmunkEvents = {
  'file.ready': [file: FileRow];
  'file.failed': [file: FileRow, reason: string];
  'file.deleted': [file: FileRow];
  'quota.exceeded': [info: { userId: string; purpose: string; neededBytes: number; freeBytes: number }];
  /** An upload was admitted: its quota is reserved. */
  'upload.started': [info: { fileId: string; userId: string; purpose: string; bytes: number }];
  /** An upload was committed (ready, or processing in the background); ms = time to check, process and store it. */
  'upload.stored': [file: FileRow, info: { ms: number }];
  /** Refused at creation (no ms) or at completion (ms = time spent before the refusal). */
  'upload.refused': [info: { fileId: string; userId: string; purpose: string; code: string; status: number; kind?: string; ms?: number }];
};

export type EventBus = {
  emit<K extends keyof ChipmunkEvents>(event: K, ...args: ChipmunkEvents[K]): void;
  on<K extends keyof ChipmunkEvents>(event: K, listener: (...args: ChipmunkEvents[K]) => void): void;
};

export function createEventBus(): EventBus {
  const emitter = new EventEmitter();
  return {
    emit: (event, ...args) => {
      emitter.emit(event, ...args);
    },
    on: (event, listener) => {
      emitter.on(event, listener as (...a: unknown[]) => void);
    },
  };
}
