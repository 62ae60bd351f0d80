// The demo page: a tiny app that plays both parts, its own backend (asking /demo/api for upload
// tokens) and its client (uploading with tus-js-client, showing the file JSON that comes back).
// Plain browser JavaScript, no build step: tus-js-client and thumbhash are served from node_modules.

import { thumbHashToDataURL } from '/demo/assets/thumbhash.js';

const $ = (id) => document.getElementById(id);
const tus = () => window.tus;

const state = {
  config: null,
  upload: null,
  uploadPaused: false,
  file: null,
  /** The user whose usage and files are on screen. */
  shownUser: '',
  poll: null,
  waveform: null,
};

// ---------- small helpers ----------

/** Same units as the server's sentences: powers of 1000. */
function formatBytes(bytes) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits).replace(/\.0$/, '')} ${units[unit]}`;
}

function formatTime(seconds) {
  if (!Number.isFinite(seconds)) return '0:00';
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== 'string') node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of [].concat(children)) if (child != null) node.append(child);
  return node;
}

class ServerError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

/** Reads the sentence out of Chipmunk's one error shape: { error: { code, message } }. */
function parseErrorBody(text, fallback) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && typeof body.error.message === 'string') return new ServerError(body.error.message, body.error.code);
  } catch {
    // not JSON: fall through
  }
  return new ServerError(text && text.length < 300 ? text : fallback, undefined);
}

async function api(path, init = {}) {
  const headers = { accept: 'application/json' };
  if (init.json !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`/demo/api${path}`, {
    method: init.method ?? 'GET',
    headers,
    body: init.json !== undefined ? JSON.stringify(init.json) : undefined,
  });
  if (res.status === 204) return undefined;
  const text = await res.text();
  if (!res.ok) throw parseErrorBody(text, `The server answered ${res.status}.`);
  return JSON.parse(text);
}

function userId() {
  return state.config.userPrefix + $('user').value.trim();
}

function purpose() {
  return $('purpose').value;
}

// ---------- errors ----------

function showError(err) {
  const message = tusErrorMessage(err);
  $('error-message').textContent = message.sentence;
  $('error-code').textContent = message.code ?? '';
  $('error-code').hidden = !message.code;
  $('error').hidden = false;
}

// How an app shows Chipmunk's sentence instead of tus-js-client's technical text: every refusal is
// { "error": { "code", "message" } }, and tus-js-client keeps the answer in err.originalResponse
// (Uppy: the same err in its 'upload-error' event; see the README's "Clients" section).
function tusErrorMessage(err) {
  if (err instanceof ServerError) return { sentence: err.message, code: err.code };
  const res = err && err.originalResponse;
  if (res) {
    const parsed = parseErrorBody(res.getBody(), `The upload was refused (${res.getStatus()}).`);
    return { sentence: parsed.message, code: parsed.code };
  }
  return { sentence: (err && err.message) || String(err), code: undefined };
}

function clearError() {
  $('error').hidden = true;
}

// Wraps a handler so any failure lands in the alert instead of the console.
const guarded =
  (fn) =>
  async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      showError(err);
    }
  };

// ---------- usage ----------

async function refreshUsage() {
  const user = await api(`/users/${encodeURIComponent(userId())}`);
  const quota = user.quotaBytes;
  const pct = (n) => (quota > 0 ? Math.min(100, (n / quota) * 100) : 100);
  const usedPct = pct(user.usedBytes);
  const reservedPct = Math.min(100 - usedPct, pct(user.reservedBytes));
  $('usage-used-bar').style.width = `${usedPct}%`;
  $('usage-reserved-bar').style.width = `${reservedPct}%`;
  $('usage-meter').setAttribute('aria-valuenow', String(Math.round(usedPct)));
  $('usage-meter').classList.toggle('full', user.usedBytes + user.reservedBytes >= quota * 0.9);
  $('usage-text').textContent = `${formatBytes(user.usedBytes)} used`;
  $('usage-text').dataset.usedBytes = String(user.usedBytes);
  $('usage-quota').textContent = `of ${formatBytes(quota)}`;
  $('usage-reserved').textContent =
    user.reservedBytes > 0
      ? `${formatBytes(user.reservedBytes)} reserved by an upload in progress`
      : `${formatBytes(Math.max(0, quota - user.usedBytes))} free`;
  $('usage-files').textContent = `${user.fileCount} ${user.fileCount === 1 ? 'file' : 'files'}`;
  syncQuotaSelect(quota);
}

function syncQuotaSelect(quota) {
  const select = $('quota');
  let option = [...select.options].find((o) => Number(o.value) === quota);
  if (!option) {
    [...select.options].filter((o) => o.dataset.custom).forEach((o) => o.remove());
    option = el('option', { value: String(quota), text: formatBytes(quota), 'data-custom': '1' });
    const after = [...select.options].find((o) => Number(o.value) > quota);
    select.insertBefore(option, after ?? null);
  }
  select.value = String(quota);
}

// ---------- the user's files ----------

async function refreshFiles() {
  const { files } = await api(`/users/${encodeURIComponent(userId())}/files?limit=20`);
  const list = $('file-list');
  list.replaceChildren(...files.map(fileListItem));
  $('file-list-empty').hidden = files.length > 0;
}

function fileListItem(file) {
  const thumb = thumbnailOf(file);
  const open = () => {
    showFile(file);
    // On a phone the result is far from the list: bring it up.
    const top = $('result').getBoundingClientRect().top;
    if (top < 0 || top > window.innerHeight * 0.6) $('result').scrollIntoView({ block: 'start' });
  };
  const item = el('li', { 'data-file-id': file.id, class: state.file && state.file.id === file.id ? 'current' : '', onclick: open }, [
    thumb ? el('img', { class: 'file-thumb', src: thumb, alt: '' }) : el('span', { class: 'file-thumb' }),
    el('div', { class: 'file-meta' }, [
      el('div', { class: 'file-name', text: file.filename, title: file.filename }),
      el('div', { class: 'file-sub', text: `${file.purpose} · ${formatBytes(file.totalBytes)}${file.status === 'ready' ? '' : ` · ${file.status}`}` }),
    ]),
    el('button', {
      type: 'button',
      class: 'icon-btn',
      'aria-label': `Delete ${file.filename}`,
      title: 'Delete',
      text: '✕',
      onclick: guarded(async (event) => {
        event.stopPropagation();
        await deleteFile(file.id);
      }),
    }),
  ]);
  return item;
}

function imageVariants(variants) {
  return (variants ?? []).filter((v) => typeof v.n === 'number' && v.n > 0 && String(v.mimeType).startsWith('image/') && v.width);
}

/**
 * A track's cover: { width, height, placeholder, thumbhash, variants: [url of cover-0 (the picture),
 * cover-1 … cover-6] }. Its rungs carry no sizes in the JSON; they are read off the loaded images.
 */
function coverOf(file) {
  const cover = file.cover;
  if (!cover || !Array.isArray(cover.variants)) return undefined;
  const rungs = cover.variants.map((v, n) => (typeof v === 'string' ? { n, url: v } : { n, ...v }));
  return { ...cover, rungs };
}

/** The ladder's boxes (rungs 1…6), as the image processor makes them; a small cover may stop short. */
const RUNG_BOXES = [10, 40, 160, 320, 640, 1080];

/** The cover rung that fills `cssSize` pixels sharply, else the largest there is. */
function coverRung(cover, cssSize) {
  const want = cssSize * (window.devicePixelRatio || 1);
  const ladder = cover.rungs.filter((r) => r.n > 0);
  return ladder.find((r) => (r.width ?? RUNG_BOXES[r.n - 1] ?? 0) >= want) ?? ladder[ladder.length - 1] ?? cover.rungs[0];
}

function thumbnailOf(file) {
  if (file.kind === 'audio') {
    const cover = coverOf(file);
    return cover ? coverRung(cover, 40).url : undefined;
  }
  const small = imageVariants(file.variants).find((v) => v.width >= 80);
  return small?.url ?? file.placeholder;
}

// ---------- uploading ----------

async function startUpload(file) {
  clearError();
  if (state.upload) {
    showError(new ServerError('One upload at a time here: pause or cancel the current one first.'));
    return;
  }
  const { token } = await api('/upload-tokens', { method: 'POST', json: { userId: userId(), purpose: purpose() } });
  const metadata = { filename: file.name };
  if (file.type) metadata.filetype = file.type;

  $('upload').hidden = false;
  $('upload').dataset.state = 'uploading';
  delete $('upload').dataset.uploadUrl;
  $('upload-name').textContent = file.name;
  $('progress').className = 'progress';
  setProgress(0, file.size);
  $('upload-status').textContent = 'Starting…';
  $('pause').hidden = false;
  $('pause').textContent = 'Pause';
  $('cancel').hidden = false;

  const upload = new (tus().Upload)(file, {
    endpoint: state.config.uploadEndpoint,
    headers: { Authorization: `Bearer ${token}` },
    metadata,
    retryDelays: [0, 1000, 3000, 5000],
    // One token is for one user: never resume another user's upload from an old fingerprint.
    storeFingerprintForResuming: false,
    onUploadUrlAvailable() {
      $('upload').dataset.uploadUrl = upload.url;
      refreshUsage().catch(showError);
    },
    onProgress(sent, total) {
      setProgress(sent, total);
      $('upload-status').textContent = sent < total ? 'Uploading…' : 'Processing…';
    },
    onSuccess(payload) {
      state.upload = null;
      $('upload').dataset.state = 'done';
      $('progress').className = 'progress done';
      $('upload-status').textContent = 'Done';
      $('pause').hidden = true;
      $('cancel').hidden = true;
      const body = payload && payload.lastResponse ? payload.lastResponse.getBody() : '';
      let json;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      if (json) showFile(json);
      refreshUsage().catch(showError);
      refreshFiles().catch(showError);
    },
    onError(err) {
      state.upload = null;
      $('upload').dataset.state = 'failed';
      $('upload-status').textContent = 'Refused';
      $('pause').hidden = true;
      $('cancel').hidden = true;
      showError(err);
      refreshUsage().catch(() => {});
    },
  });
  state.upload = upload;
  state.uploadPaused = false;
  upload.start();
}

function setProgress(sent, total) {
  const pct = total > 0 ? (sent / total) * 100 : 0;
  $('progress-bar').style.width = `${pct}%`;
  $('progress').setAttribute('aria-valuenow', String(Math.floor(pct)));
  $('progress').dataset.bytesSent = String(sent);
  $('upload-bytes').textContent = `${formatBytes(sent)} of ${formatBytes(total)} · ${Math.floor(pct)}%`;
}

async function togglePause() {
  const upload = state.upload;
  if (!upload) return;
  if (!state.uploadPaused) {
    state.uploadPaused = true;
    $('pause').textContent = 'Resume';
    $('progress').className = 'progress paused';
    $('upload').dataset.state = 'paused';
    await upload.abort(false);
    // The bytes that arrived stay on the server; Resume asks it for the offset and goes on from there.
    $('upload-status').textContent = 'Paused: the server keeps what it has';
  } else {
    state.uploadPaused = false;
    $('pause').textContent = 'Pause';
    $('progress').className = 'progress';
    $('upload').dataset.state = 'uploading';
    $('upload-status').textContent = 'Resuming…';
    upload.start();
  }
}

async function cancelUpload() {
  const upload = state.upload;
  if (!upload) return;
  state.upload = null;
  // abort(true) also terminates the upload on the server, which gives its reservation back.
  await upload.abort(true);
  $('upload').hidden = true;
  await refreshUsage();
}

// ---------- showing a file ----------

function chip(text, strong) {
  return el('span', { class: strong ? 'chip strong' : 'chip', text });
}

function showFile(file) {
  state.file = file;
  clearTimeout(state.poll);
  const result = $('result');
  result.hidden = false;
  result.dataset.fileId = file.id;
  result.dataset.status = file.status;
  $('result-name').textContent = file.filename;
  const dims = file.width && file.height ? `${file.width}×${file.height}` : undefined;
  const chips = [
    chip(`${formatBytes(file.totalBytes)} charged`, true),
    chip(`original ${formatBytes(file.bytes)}`),
    dims ? chip(dims) : null,
    chip(file.kind),
    chip(`purpose: ${file.purpose}`),
    chip(file.visibility),
    file.status === 'ready' ? null : chip(file.status),
  ];
  $('result-chips').replaceChildren(...chips.filter(Boolean));
  for (const li of $('file-list').children) li.classList.toggle('current', li.dataset.fileId === file.id);

  const busy = file.status !== 'ready' && file.status !== 'failed';
  $('result-processing').hidden = !busy;
  if (file.status === 'failed' && file.error) showError(new ServerError(file.error, 'PROCESSING_FAILED'));
  if (busy)
    state.poll = setTimeout(
      guarded(() => reloadFile(file.id)),
      1500,
    );

  if (file.kind === 'audio') showMusic(file);
  else $('music').hidden = true;
  showPreview(file.kind === 'audio' ? undefined : file);
  showVariants(file);
}

async function reloadFile(id) {
  if (!state.file || state.file.id !== id) return;
  const file = await api(`/files/${id}`);
  showFile(file);
  if (file.status !== 'processing') {
    await refreshUsage();
    await refreshFiles();
  }
}

/** The smallest variant at least `cssWidth` device pixels wide, else the largest. */
function pickVariant(variants, cssWidth) {
  const want = cssWidth * (window.devicePixelRatio || 1);
  const sorted = [...variants].sort((a, b) => a.width - b.width);
  return sorted.find((v) => v.width >= want) ?? sorted[sorted.length - 1];
}

function decodeThumbhash(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return { url: thumbHashToDataURL(bytes), length: bytes.length };
}

function showPreview(image) {
  const preview = $('preview');
  const variants = image ? imageVariants(image.variants) : [];
  const original = image && (image.variants ?? []).find((v) => v.n === 0);
  if (!image || (!variants.length && !image.placeholder && !original)) {
    preview.hidden = true;
    return;
  }
  preview.hidden = false;
  const frame = $('blurup');
  const width = image.width || variants[0]?.width || 4;
  const height = image.height || variants[0]?.height || 3;
  frame.style.aspectRatio = `${width} / ${height}`;
  const frameWidth = Math.min(frame.clientWidth || 600, (460 * width) / height);
  const sharp = variants.length ? pickVariant(variants, frameWidth) : original;

  let thumb;
  if (image.thumbhash) {
    try {
      thumb = decodeThumbhash(image.thumbhash);
    } catch {
      thumb = undefined;
    }
  }
  $('thumbhash-box').hidden = !thumb;
  if (thumb) {
    $('thumbhash-small').src = thumb.url;
    $('thumbhash-large').src = thumb.url;
    $('thumbhash-bytes').textContent = `${thumb.length} bytes`;
    $('thumbhash-text').textContent = image.thumbhash;
  }

  const placeholder = image.placeholder ?? thumb?.url;
  $('placeholder').hidden = !placeholder;
  if (placeholder) $('placeholder').src = placeholder;
  $('blurup-caption').textContent = image.placeholder
    ? `The placeholder (${formatBytes(image.placeholder.length)} inline in the JSON) blurs into variant ${sharp?.n ?? ''}.`
    : 'No placeholder in the JSON for this file.';

  frame.classList.remove('loaded');
  const img = $('sharp');
  img.onload = () => {
    // A beat of blur first, so the swap is visible even on localhost.
    setTimeout(() => frame.classList.add('loaded'), 350);
  };
  if (sharp) img.src = sharp.url;
  else img.removeAttribute('src');
}

function replayBlur() {
  const frame = $('blurup');
  frame.classList.remove('loaded');
  setTimeout(() => frame.classList.add('loaded'), 700);
}

function ladderFigure(n, url, width, height, bytes) {
  const caption = el('figcaption', { text: width ? `${n} · ${width}×${height} · ${formatBytes(bytes)}` : `${n}` });
  const img = el('img', {
    src: url,
    alt: `Variant ${n}`,
    decoding: 'async',
    width: width ? String(width) : undefined,
    height: height ? String(height) : undefined,
  });
  // Cover rungs come without sizes in the JSON: the caption says what arrived.
  if (!width) img.addEventListener('load', () => (caption.textContent = `${n} · ${img.naturalWidth}×${img.naturalHeight}`));
  return el('figure', { 'data-variant': String(n) }, [img, caption]);
}

function showVariants(file) {
  let figures;
  if (file.kind === 'audio') {
    const cover = coverOf(file);
    figures = (cover?.rungs ?? []).filter((r) => r.n > 0).map((r) => ladderFigure(`cover ${r.n}`, r.url));
    $('ladder-title').textContent = figures.length ? 'Cover ladder' : 'Variants';
  } else {
    const ladder = imageVariants(file.variants).sort((a, b) => a.width - b.width);
    figures = ladder.map((v) => ladderFigure(v.n, v.url, v.width, v.height, v.bytes));
    $('ladder-title').textContent = 'Variants';
  }
  $('ladder').replaceChildren(...figures);
  $('ladder').hidden = figures.length === 0;
  $('ladder-note').hidden = figures.length === 0;

  const rows = [...(file.variants ?? [])];
  if (file.kind === 'audio') {
    const picture = coverOf(file)?.rungs[0];
    if (picture) rows.push({ n: 'cover 0', url: picture.url, width: file.cover.width, height: file.cover.height, mimeType: 'the embedded picture' });
  }
  $('variant-rows').replaceChildren(
    ...rows.map((v) =>
      el('tr', { 'data-variant-row': String(v.n) }, [
        el('td', { text: v.n === 0 ? '0 (original)' : String(v.n) }),
        el('td', { text: v.width && v.height ? `${v.width}×${v.height}` : '–' }),
        el('td', { class: 'num', text: v.bytes !== undefined ? formatBytes(v.bytes) : '–' }),
        el('td', { class: 'muted', text: v.mimeType }),
        el('td', { class: 'num' }, el('a', { href: v.url, target: '_blank', rel: 'noopener', class: 'link', text: 'open' })),
      ]),
    ),
  );
}

// ---------- music ----------

function showMusic(file) {
  $('music').hidden = false;
  $('track-title').textContent = file.title ?? file.filename;
  const facts = [
    file.artist,
    file.album,
    file.durationMs ? formatTime(file.durationMs / 1000) : undefined,
    file.codec ? `${file.codec}${file.lossless ? ', lossless' : ''}` : undefined,
  ];
  $('track-sub').textContent = facts.filter(Boolean).join(' · ');

  const cover = coverOf(file);
  const coverImg = $('cover');
  coverImg.classList.toggle('none', !cover);
  if (cover) {
    // The placeholder shows at once; the sharp rung replaces it when it has arrived.
    coverImg.src = cover.placeholder ?? coverRung(cover, 168).url;
    const sharp = new Image();
    sharp.onload = () => {
      if (state.file && state.file.id === file.id) coverImg.src = sharp.src;
    };
    sharp.src = coverRung(cover, 168).url;
  } else {
    coverImg.removeAttribute('src');
  }

  const byName = (name) => (file.variants ?? []).find((v) => String(v.n) === name);
  const audio = $('audio');
  const candidates = [byName('1'), byName('2')].filter(Boolean);
  const playable = candidates.find((v) => audio.canPlayType(v.mimeType)) ?? candidates[0];
  audio.pause();
  if (playable) {
    if (audio.src !== playable.url) audio.src = playable.url;
    $('music-note').textContent = `Playing rendition ${playable.n} (${playable.mimeType}, ${formatBytes(playable.bytes)}).`;
  } else {
    audio.removeAttribute('src');
    $('music-note').textContent = file.status === 'ready' ? 'No playable rendition in the JSON.' : 'The renditions are being made…';
  }
  $('play').disabled = !playable;
  $('play').innerHTML = '&#9654;';

  state.waveform = null;
  drawWaveform();
  const wave = byName('waveform');
  if (wave) {
    fetch(wave.url)
      .then((res) => (res.ok ? res.json() : Promise.reject(new Error(`waveform: ${res.status}`))))
      .then((json) => {
        if (state.file && state.file.id === file.id) {
          state.waveform = json;
          drawWaveform();
        }
      })
      .catch(() => {});
  }
}

/** Draws BBC audiowaveform JSON (version 2: interleaved min/max per pixel and channel). */
function drawWaveform() {
  const canvas = $('waveform');
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 300;
  const cssHeight = canvas.clientHeight || 72;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);

  const wf = state.waveform;
  const bar = 3;
  const gap = 1;
  const bars = Math.max(1, Math.floor(cssWidth / (bar + gap)));
  const audio = $('audio');
  const played = audio.duration > 0 ? audio.currentTime / audio.duration : 0;
  const accent = getComputedStyle(document.documentElement).getPropertyValue('--accent').trim() || '#b85420';

  let peaks;
  if (wf && Array.isArray(wf.data) && wf.length > 0) {
    const channels = wf.channels || 1;
    const full = wf.bits === 16 ? 32768 : 128;
    peaks = new Array(bars).fill(0);
    for (let i = 0; i < bars; i++) {
      const from = Math.floor((i / bars) * wf.length);
      const to = Math.max(from + 1, Math.floor(((i + 1) / bars) * wf.length));
      let peak = 0;
      for (let x = from; x < to; x++) {
        for (let ch = 0; ch < channels; ch++) {
          const base = (x * channels + ch) * 2;
          peak = Math.max(peak, Math.abs(wf.data[base] ?? 0), Math.abs(wf.data[base + 1] ?? 0));
        }
      }
      peaks[i] = Math.min(1, peak / full);
    }
  }
  for (let i = 0; i < bars; i++) {
    const amp = peaks ? Math.max(0.04, peaks[i]) : 0.04;
    const h = amp * (cssHeight - 4);
    ctx.fillStyle = i / bars < played ? accent : peaks ? '#d6c9bb' : '#ebe5dc';
    ctx.fillRect(i * (bar + gap), (cssHeight - h) / 2, bar, h);
  }
}

function togglePlay() {
  const audio = $('audio');
  if (audio.paused) audio.play().catch(showError);
  else audio.pause();
}

function seek(event) {
  const audio = $('audio');
  const rect = event.currentTarget.getBoundingClientRect();
  const frac = (event.clientX - rect.left) / rect.width;
  if (audio.duration > 0) audio.currentTime = frac * audio.duration;
  drawWaveform();
}

// ---------- deleting ----------

async function deleteFile(id) {
  clearError();
  await api(`/files/${id}`, { method: 'DELETE' });
  if (state.file && state.file.id === id) {
    state.file = null;
    clearTimeout(state.poll);
    $('audio').pause();
    $('result').hidden = true;
  }
  await Promise.all([refreshUsage(), refreshFiles()]);
}

// ---------- wiring ----------

function describePurpose(p) {
  const kinds = p.kinds.map((k) => (k === 'audio' ? 'music' : `${k}s`)).join(' or ');
  const shape = p.kinds.includes('image') ? (p.square ? ' · square variants' : ' · keeps aspect ratio') : '';
  return `Takes ${kinds} up to ${formatBytes(p.maxBytes)}${shape} · ${p.visibility} by default.`;
}

async function changeUser() {
  const id = $('user').value.trim();
  if (!/^[\w.@:+-]{1,100}$/.test(id)) {
    showError(new ServerError('A user id is letters, digits and . _ @ : + - only.'));
    return;
  }
  clearError();
  if (id === state.shownUser) return;
  state.shownUser = id;
  localStorage.setItem('chipmunk-demo-user', id);
  state.file = null;
  $('result').hidden = true;
  await Promise.all([refreshUsage(), refreshFiles()]);
}

async function init() {
  state.config = await api('/config');
  $('user-prefix').textContent = state.config.userPrefix;
  const select = $('purpose');
  select.replaceChildren(...state.config.purposes.map((p) => el('option', { value: p.name, text: p.name })));
  const savedPurpose = localStorage.getItem('chipmunk-demo-purpose');
  if (savedPurpose && state.config.purposes.some((p) => p.name === savedPurpose)) select.value = savedPurpose;
  else if (state.config.purposes.some((p) => p.name === 'image')) select.value = 'image';
  const savedUser = localStorage.getItem('chipmunk-demo-user');
  if (savedUser) $('user').value = savedUser;
  const showHint = () => {
    const p = state.config.purposes.find((x) => x.name === select.value);
    $('purpose-hint').textContent = p ? describePurpose(p) : '';
    $('file-input').accept = p ? p.kinds.map((k) => `${k}/*`).join(',') : '';
  };
  showHint();
  select.addEventListener('change', () => {
    localStorage.setItem('chipmunk-demo-purpose', select.value);
    showHint();
  });
  $('user').addEventListener('change', guarded(changeUser));

  $('quota-form').addEventListener(
    'submit',
    guarded(async (event) => {
      event.preventDefault();
      await api(`/users/${encodeURIComponent(userId())}/quota`, { method: 'PUT', json: { quotaBytes: Number($('quota').value) } });
      clearError();
      await refreshUsage();
    }),
  );

  const drop = $('drop');
  $('file-input').addEventListener(
    'change',
    guarded(async (event) => {
      const file = event.target.files[0];
      event.target.value = '';
      if (file) await startUpload(file);
    }),
  );
  drop.addEventListener('click', (event) => {
    if (event.target.closest('label') || event.target === $('file-input')) return;
    $('file-input').click();
  });
  drop.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      $('file-input').click();
    }
  });
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener(
    'drop',
    guarded(async (event) => {
      event.preventDefault();
      drop.classList.remove('over');
      const file = event.dataTransfer.files[0];
      if (file) await startUpload(file);
    }),
  );

  $('pause').addEventListener('click', guarded(togglePause));
  $('cancel').addEventListener('click', guarded(cancelUpload));
  $('delete').addEventListener(
    'click',
    guarded(() => state.file && deleteFile(state.file.id)),
  );
  $('replay').addEventListener('click', replayBlur);
  $('play').addEventListener('click', togglePlay);
  $('waveform').addEventListener('click', seek);
  const audio = $('audio');
  audio.addEventListener('timeupdate', () => {
    $('time').textContent = formatTime(audio.currentTime);
    drawWaveform();
  });
  audio.addEventListener('play', () => ($('play').innerHTML = '&#10074;&#10074;'));
  audio.addEventListener('pause', () => ($('play').innerHTML = '&#9654;'));
  audio.addEventListener('loadedmetadata', () => ($('time').textContent = formatTime(audio.duration)));
  window.addEventListener('resize', () => {
    if (!$('music').hidden) drawWaveform();
  });

  state.shownUser = $('user').value.trim();
  await Promise.all([refreshUsage(), refreshFiles()]);
  document.body.dataset.ready = 'true';
}

window.addEventListener('DOMContentLoaded', () => {
  init().catch(showError);
});
