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
const guarded = (fn) => async (...args) => {
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
  $('usage-reserved').textContent = user.reservedBytes > 0
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
      type: 'button', class: 'icon-btn', 'aria-label': `Delete ${file.filename}`, title: 'Delete', text: '✕',
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

/** The cover's own ladder, however the audio processor nests it. */
function coverOf(file) {
  const cover = file.cover;
  if (!cover) return undefined;
  if (Array.isArray(cover)) return { variants: cover };
  return cover;
}

function thumbnailOf(file) {
  const source = file.kind === 'audio' ? coverOf(file) : file;
  if (!source) return undefined;
  const small = imageVariants(source.variants).find((v) => v.width >= 80);
  return small?.url ?? source.placeholder;
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
  if (busy) state.poll = setTimeout(guarded(() => reloadFile(file.id)), 1500);

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

function showVariants(file) {
  const ladderSource = file.kind === 'audio' ? coverOf(file) : file;
  const ladder = imageVariants(ladderSource?.variants).sort((a, b) => a.width - b.width);
  $('ladder').replaceChildren(
    ...ladder.map((v) =>
      el('figure', { 'data-variant': String(v.n) }, [
        el('img', { src: v.url, width: String(v.width), height: String(v.height), alt: `Variant ${v.n}`, decoding: 'async' }),
        el('figcaption', { text: `${v.n} · ${v.width}×${v.height} · ${formatBytes(v.bytes)}` }),
      ]),
    ),
  );
  $('ladder').hidden = ladder.length === 0;

  const rows = [...(file.variants ?? [])];
  if (file.kind === 'audio') for (const v of coverOf(file)?.variants ?? []) rows.push({ ...v, n: `cover ${v.n}` });
  $('variant-rows').replaceChildren(
    ...rows.map((v) =>
      el('tr', { 'data-variant-row': String(v.n) }, [
        el('td', { text: v.n === 0 ? '0 (original)' : String(v.n) }),
        el('td', { text: v.width && v.height ? `${v.width}×${v.height}` : '–' }),
        el('td', { class: 'num', text: formatBytes(v.bytes) }),
        el('td', { class: 'muted', text: v.mimeType }),
        el('td', { class: 'num' }, el('a', { href: v.url, target: '_blank', rel: 'noopener', class: 'link', text: 'open' })),
      ]),
    ),
  );
}

// ---------- music ----------

function showMusic(file) {
  $('music').hidden = false;
  const tags = file.tags ?? file.metadata ?? {};
  $('track-title').textContent = tags.title ?? file.title ?? file.filename;
  const duration = file.durationSeconds ?? file.duration ?? tags.duration;
  $('track-sub').textContent = [tags.artist ?? file.artist, tags.album ?? file.album, duration ? formatTime(duration) : undefined].filter(Boolean).join(' · ');

  const cover = coverOf(file);
  const coverVariant = cover ? pickVariant(imageVariants(cover.variants), 168) : undefined;
  const coverImg = $('cover');
  coverImg.classList.toggle('none', !coverVariant && !cover?.placeholder);
  if (coverVariant) coverImg.src = coverVariant.url;
  else if (cover?.placeholder) coverImg.src = cover.placeholder;
  else coverImg.removeAttribute('src');

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

  $('quota-form').addEventListener('submit', guarded(async (event) => {
    event.preventDefault();
    await api(`/users/${encodeURIComponent(userId())}/quota`, { method: 'PUT', json: { quotaBytes: Number($('quota').value) } });
    clearError();
    await refreshUsage();
  }));

  const drop = $('drop');
  $('file-input').addEventListener('change', guarded(async (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (file) await startUpload(file);
  }));
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
  drop.addEventListener('drop', guarded(async (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = event.dataTransfer.files[0];
    if (file) await startUpload(file);
  }));

  $('pause').addEventListener('click', guarded(togglePause));
  $('cancel').addEventListener('click', guarded(cancelUpload));
  $('delete').addEventListener('click', guarded(() => state.file && deleteFile(state.file.id)));
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
