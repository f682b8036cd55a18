// Latent-space widget: 2-D latent map of real (and generated) CT slices; the point under the cursor
// is decoded in the browser by the TF.js decoder and shown as an image and as a 3-D point cloud.
// Optional overlays (the optional blocks of points.json): GAN projections of real scans (hollow diamonds, a faint
// line to the scan each one reconstructs) and progressions between two projected scans (a numbered
// polyline; a <select> picks which one is drawn, hovering a step shows its decoded GAN frame).
// Files next to this page: points.json, thumbs.png, model/model.json (written by `python -m covgan_utils widget export`).
// The format of points.json is covgan_utils/widget/schema.py; the export writes the versions this page reads
// and the blocks it needs into <meta name="covgan-points-format"> of index.html, checked by checkPoints().

const COLORS = ['#d62728', '#1f77b4'];  // CT_COVID, CT_NonCOVID
const GENERATED_COLOR = '#2ca02c';
const PROJECTED_COLOR = '#9467bd';
const PATH_COLOR = '#ff7f0e';
const N_NEIGHBOURS = 5;
const params = new URLSearchParams(location.search);

const $ = (id) => document.getElementById(id);
const state = { ready: false, error: null, latent: null, decodedLatent: null, decodes: 0, pending: null, busy: false,
  progression: -1, mapDraws: 0, hovered: null };
const api = { state };
window.covganWidget = api;

function setStatus(text) { $('status').textContent = text; }

function showError(message) {
  state.error = String(message);
  const box = $('error');
  box.textContent = `The widget could not start.\n${message}\n\nRe-create it with: python -m covgan_utils widget export`;
  box.hidden = false;
  $('app').hidden = true;
  setStatus('Error');
}

window.addEventListener('unhandledrejection', (event) => {
  if (!state.ready) showError(event.reason && event.reason.message ? event.reason.message : event.reason);
});

async function fetchJson(url, what) {
  let response;
  try { response = await fetch(url); } catch (err) { throw new Error(`${what} (${url}) could not be fetched: ${err.message}`); }
  if (!response.ok) throw new Error(`${what} (${url}) is missing: HTTP ${response.status}`);
  try { return await response.json(); } catch (err) { throw new Error(`${what} (${url}) is not valid JSON: ${err.message}`); }
}

function loadImage(url, what) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`${what} (${url}) could not be loaded`));
    img.src = url;
  });
}

// the points.json format this page was exported with: {"versions": [...], "required": [...], "file": "points.json"}
function pointsFormat() {
  const meta = document.querySelector('meta[name="covgan-points-format"]');
  try { return JSON.parse(meta.content); } catch (err) {
    throw new Error('This page carries no points.json format (<meta name="covgan-points-format"> of index.html): it was not written by the export.');
  }
}

function checkPoints(points, format) {
  const file = format.file || 'points.json';
  if (points === null || typeof points !== 'object' || Array.isArray(points)) throw new Error(`The latent map (${file}) is not a JSON object.`);
  if (!format.versions.includes(points.version)) {
    throw new Error(`The latent map (${file}) is format version ${JSON.stringify(points.version)}; this page reads version ${format.versions.join(' or ')}. `
      + 'The page and points.json come from different exports.');
  }
  const missing = format.required.filter((key) => !(key in points));
  if (missing.length) throw new Error(`The latent map (${file}) lacks the field "${missing[0]}" of its format version ${points.version}.`);
  return points;
}

// ------------------------------------------------------------------ model

async function loadDecoder() {
  if (typeof tf === 'undefined') throw new Error('TensorFlow.js (vendor/tf.min.js) did not load.');
  await tf.setBackend(params.get('backend') || 'cpu');
  await tf.ready();
  const url = 'model/model.json';
  const manifest = await fetchJson(url, 'The decoder model');
  if (!manifest.modelTopology || !manifest.weightsManifest) throw new Error(`The decoder model (${url}) is corrupt: no modelTopology/weightsManifest.`);
  let model;
  try {
    model = await tf.loadGraphModel(url);
  } catch (err) {
    throw new Error(`The decoder model (${url}) could not be loaded: ${err.message}`);
  }
  const probe = tf.tidy(() => model.predict(tf.zeros([1, 2])));
  const shape = probe.shape;
  probe.dispose();
  if (shape.length !== 4 || shape[1] !== shape[2]) throw new Error(`The decoder model returns shape [${shape}], expected [1, H, W, 1].`);
  return model;
}

// ------------------------------------------------------------------ map geometry

function makeMap(points, canvas) {
  const [x0, x1, y0, y1] = points.bounds;
  const w = canvas.width, h = canvas.height;
  return {
    toCanvas: ([x, y]) => [(x - x0) / (x1 - x0) * w, (1 - (y - y0) / (y1 - y0)) * h],
    toLatent: (px, py) => [x0 + px / w * (x1 - x0), y0 + (1 - py / h) * (y1 - y0)],
  };
}

// the optional blocks, empty for version-1 files
const projectedOf = (points) => points.projected || { z: [], real: [], thumb_offset: 0 };
const progressionsOf = (points) => points.progressions || [];

function drawMap(ctx, points, map, progression) {
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.globalAlpha = 0.75;
  const dot = (z, color, r) => {
    const [px, py] = map.toCanvas(z);
    ctx.fillStyle = color;
    ctx.beginPath(); ctx.arc(px, py, r, 0, 2 * Math.PI); ctx.fill();
  };
  points.real.z.forEach((z, i) => dot(z, COLORS[points.real.cls[i]] || '#888', 2.5));
  points.generated.z.forEach((z) => dot(z, GENERATED_COLOR, 3));
  ctx.globalAlpha = 1;
  drawProjected(ctx, projectedOf(points), points.real.z, map);
  if (progression) drawProgression(ctx, progression, map);
}

function line(ctx, a, b, map) {
  const [ax, ay] = map.toCanvas(a), [bx, by] = map.toCanvas(b);
  ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
}

function drawProjected(ctx, projected, realZ, map) {
  ctx.strokeStyle = PROJECTED_COLOR;
  ctx.globalAlpha = 0.35; ctx.lineWidth = 1;
  projected.z.forEach((z, i) => line(ctx, realZ[projected.real[i]], z, map));  // real scan -> its projection
  ctx.globalAlpha = 1; ctx.lineWidth = 1.5;
  for (const z of projected.z) {  // hollow diamonds
    const [px, py] = map.toCanvas(z);
    ctx.beginPath(); ctx.moveTo(px, py - 5); ctx.lineTo(px + 5, py); ctx.lineTo(px, py + 5); ctx.lineTo(px - 5, py); ctx.closePath();
    ctx.stroke();
  }
}

function drawProgression(ctx, p, map) {
  const steps = p.z.map((z) => map.toCanvas(z));  // [K] canvas points
  ctx.strokeStyle = PATH_COLOR;
  ctx.lineWidth = 1; ctx.setLineDash([4, 3]);  // real inputs -> their projections (the path's ends)
  line(ctx, p.input_z[0], p.z[0], map);
  line(ctx, p.input_z[1], p.z[p.z.length - 1], map);
  ctx.setLineDash([]);
  ctx.beginPath();
  steps.forEach(([x, y], k) => (k ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.strokeStyle = '#fff'; ctx.lineWidth = 4; ctx.stroke();  // a halo keeps the path visible over dense dots
  ctx.strokeStyle = PATH_COLOR; ctx.lineWidth = 2; ctx.stroke();
  // the real inputs: hollow squares
  for (const z of p.input_z) {
    const [px, py] = map.toCanvas(z);
    ctx.strokeRect(px - 5, py - 5, 10, 10);
  }
  ctx.fillStyle = '#222'; ctx.font = '10px system-ui, sans-serif';
  steps.forEach(([x, y], k) => ctx.fillText(String(k + 1), x + 6, y - 6));  // step numbers, under the markers
  ctx.fillStyle = PATH_COLOR; ctx.strokeStyle = '#fff'; ctx.lineWidth = 1;
  for (const [x, y] of steps) { ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.fill(); ctx.stroke(); }
}

function drawCursor(ctx, base, map, z) {
  ctx.putImageData(base, 0, 0);
  const [px, py] = map.toCanvas(z);
  ctx.strokeStyle = '#000'; ctx.lineWidth = 1.5;
  ctx.beginPath(); ctx.arc(px, py, 7, 0, 2 * Math.PI);
  ctx.moveTo(px - 11, py); ctx.lineTo(px + 11, py); ctx.moveTo(px, py - 11); ctx.lineTo(px, py + 11);
  ctx.stroke();
}

function drawThumb(target, sprite, thumbs, index) {
  const ctx = target.getContext('2d');
  const s = thumbs.size, col = index % thumbs.cols, row = Math.floor(index / thumbs.cols);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(sprite, col * s, row * s, s, s, 0, 0, target.width, target.height);
}

function nearest(list, z, k) {
  const d = list.map((p, i) => [(p[0] - z[0]) ** 2 + (p[1] - z[1]) ** 2, i]);
  d.sort((a, b) => a[0] - b[0]);
  return d.slice(0, k);
}

// ------------------------------------------------------------------ point cloud

async function makeCloud(container, size) {
  let THREE, TrackballControls;
  try {
    THREE = await import('three');
    ({ TrackballControls } = await import('three/trackball'));
  } catch (err) {
    container.innerHTML = `<p>three.js could not be loaded (${err.message}); the 3-D view is off.</p>`;
    return null;
  }
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ antialias: true });
  } catch (err) {
    container.innerHTML = '<p>This browser offers no WebGL, so the 3-D point cloud is off; the rest of the widget works.</p>';
    return null;
  }
  const w = container.clientWidth || 420, h = container.clientHeight || 420;
  renderer.setSize(w, h);
  renderer.setClearColor(0x111111);
  container.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  const camera = new THREE.PerspectiveCamera(45, w / h, 0.01, 100);
  camera.position.set(0, -2.2, 2.0);
  camera.up.set(0, 0, 1);
  camera.lookAt(0, 0, 0);
  const n = size * size;
  const positions = new Float32Array(n * 3), colors = new Float32Array(n * 3);
  for (let r = 0; r < size; r++) {
    for (let c = 0; c < size; c++) {
      const i = r * size + c;
      positions[3 * i] = (c / (size - 1)) * 2 - 1;
      positions[3 * i + 1] = 1 - (r / (size - 1)) * 2;
    }
  }
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute('position', new THREE.BufferAttribute(positions, 3));
  geometry.setAttribute('color', new THREE.BufferAttribute(colors, 3));
  const cloud = new THREE.Points(geometry, new THREE.PointsMaterial({ size: 0.02, vertexColors: true }));
  scene.add(cloud);
  const controls = new TrackballControls(camera, renderer.domElement);
  controls.rotateSpeed = 3.0; controls.zoomSpeed = 1.2; controls.panSpeed = 0.8;
  (function animate() {
    requestAnimationFrame(animate);
    controls.update();
    renderer.render(scene, camera);
  })();
  return {
    update(grey) {  // grey: Float32Array in [0, 1], row-major
      for (let i = 0; i < n; i++) {
        positions[3 * i + 2] = grey[i] * 0.6;
        colors[3 * i] = colors[3 * i + 1] = colors[3 * i + 2] = 0.15 + 0.85 * grey[i];
      }
      geometry.attributes.position.needsUpdate = true;
      geometry.attributes.color.needsUpdate = true;
    },
  };
}

// ------------------------------------------------------------------ main

async function main() {
  setStatus('Loading latent map…');
  const format = pointsFormat();
  const points = checkPoints(await fetchJson(format.file || 'points.json', 'The latent map'), format);
  const sprite = await loadImage(points.thumbs.file, 'The thumbnail sprite');
  setStatus('Loading decoder…');
  const model = await loadDecoder();
  const size = points.image_size;

  const mapCanvas = $('map'), mapCtx = mapCanvas.getContext('2d', { willReadFrequently: true });
  const map = makeMap(points, mapCanvas);
  const projected = projectedOf(points), progressions = progressionsOf(points);
  let base = null;
  function redraw(index) {  // the map with progression `index` (-1: none); the cursor goes on top of `base`
    state.progression = index >= 0 && index < progressions.length ? index : -1;
    drawMap(mapCtx, points, map, progressions[state.progression]);
    base = mapCtx.getImageData(0, 0, mapCanvas.width, mapCanvas.height);
    if (state.latent) drawCursor(mapCtx, base, map, state.latent);
    state.mapDraws += 1;
  }
  redraw(progressions.length ? 0 : -1);
  setupOverlayControls(points, redraw);
  const counts = [0, 0];
  points.real.cls.forEach((c) => { counts[c] += 1; });
  $('n-covid').textContent = counts[0];
  $('n-noncovid').textContent = counts[1];
  $('n-generated').textContent = points.generated.z.length;
  const ae = points.autoencoder || {};
  const gan = points.projection ? `; ${projected.z.length} projected and ${progressions.length} progressions with generator ${points.projection.generator} `
    + `(${points.projection.steps} steps, ${points.projection.space})` : '';
  $('about').textContent = `Autoencoder ${ae.run || ''} (widths ${(ae.widths || []).join('-')}, ${ae.epochs || '?'} epochs); `
    + `${points.real.z.length} real scans, ${points.generated.z.length} generated${points.generated.source ? ` (${points.generated.source})` : ''}${gan}; TF.js ${tf.version.tfjs}, backend ${tf.getBackend()}.`;

  const decodedCanvas = $('decoded'), decodedCtx = decodedCanvas.getContext('2d');
  decodedCanvas.width = decodedCanvas.height = size;
  const cloud = await makeCloud($('cloud'), size);
  const neighbours = $('neighbours');

  async function decode(z) {
    const out = tf.tidy(() => model.predict(tf.tensor2d([z], [1, 2], 'float32')));
    const values = await out.data();
    out.dispose();
    const grey = new Float32Array(size * size);
    const pixels = decodedCtx.createImageData(size, size);
    for (let i = 0; i < size * size; i++) {
      const v = Math.min(1, Math.max(0, (values[i] + 1) / 2));
      grey[i] = v;
      const b = Math.min(255, Math.max(0, Math.round((values[i] + 1) * 127.5)));
      pixels.data[4 * i] = pixels.data[4 * i + 1] = pixels.data[4 * i + 2] = b;
      pixels.data[4 * i + 3] = 255;
    }
    decodedCtx.putImageData(pixels, 0, 0);
    if (cloud) cloud.update(grey);
    return grey;
  }

  function showNeighbours(z) {
    neighbours.innerHTML = '';
    for (const [d2, i] of nearest(points.real.z, z, N_NEIGHBOURS)) {
      const li = document.createElement('li');
      const c = document.createElement('canvas');
      c.width = c.height = points.thumbs.size;
      drawThumb(c, sprite, points.thumbs, i);
      const label = document.createElement('span');
      label.textContent = `${points.real.file[i]} (${points.classes[points.real.cls[i]]}, ${points.real.split[i]}, d=${Math.sqrt(d2).toFixed(3)})`;
      li.append(c, label);
      neighbours.appendChild(li);
    }
  }

  // one decode in flight; the newest requested point wins
  async function pump() {
    if (state.busy) return;
    state.busy = true;
    try {
      while (state.pending) {
        const z = state.pending;
        state.pending = null;
        await decode(z);
        showNeighbours(z);
        state.decodedLatent = z;
        state.decodes += 1;
      }
    } finally {
      state.busy = false;
    }
  }

  function requestDecode(z) {
    state.latent = z;
    state.pending = z;
    $('cursor').textContent = `z = (${z[0].toFixed(3)}, ${z[1].toFixed(3)})`;
    drawCursor(mapCtx, base, map, z);
    return pump().catch((err) => showError(`Decoding failed: ${err.message}`));
  }

  const tooltip = $('tooltip'), tooltipCanvas = tooltip.querySelector('canvas'), tooltipLabel = tooltip.querySelector('span');
  function hover(px, py) {
    let best = null, bestD = 36;  // within 6 px
    const check = (z, index, label, kind) => {
      const [qx, qy] = map.toCanvas(z);
      const d = (qx - px) ** 2 + (qy - py) ** 2;
      if (d < bestD) { bestD = d; best = { index, label, kind, qx, qy }; }
    };
    const path = progressions[state.progression];
    if (path) {  // the drawn path's steps come first, then every other marker
      path.z.forEach((z, k) => check(z, path.thumbs[k], `${path.name}: step ${k + 1}/${path.z.length} (GAN frame)`, { step: k }));
      path.input_z.forEach((z, k) => check(z, path.input_thumbs[k], `${path.inputs[k]} (real input ${k ? 'B' : 'A'})`, { input: k }));
    }
    if (!best) {
      points.real.z.forEach((z, i) => check(z, i, `${points.real.file[i]} (${points.classes[points.real.cls[i]]})`, { real: i }));
      points.generated.z.forEach((z, i) => check(z, points.thumbs.generated_offset + i, `generated #${i}`, { generated: i }));
      projected.z.forEach((z, i) => check(z, projected.thumb_offset + i, `projection of ${points.real.file[projected.real[i]]}`, { projected: i }));
    }
    state.hovered = best ? { ...best.kind, thumb: best.index } : null;
    if (!best) { tooltip.hidden = true; return; }
    drawThumb(tooltipCanvas, sprite, points.thumbs, best.index);
    tooltipLabel.textContent = best.label;
    tooltip.style.left = `${mapCanvas.offsetLeft + best.qx + 12}px`;
    tooltip.style.top = `${mapCanvas.offsetTop + best.qy + 12}px`;
    tooltip.hidden = false;
  }

  function pointer(event) {
    const rect = mapCanvas.getBoundingClientRect();
    const px = (event.clientX - rect.left) * (mapCanvas.width / rect.width);
    const py = (event.clientY - rect.top) * (mapCanvas.height / rect.height);
    hover(px, py);
    requestDecode(map.toLatent(px, py));
  }
  mapCanvas.addEventListener('pointermove', pointer);
  mapCanvas.addEventListener('pointerdown', (event) => { mapCanvas.setPointerCapture(event.pointerId); pointer(event); });
  mapCanvas.addEventListener('pointerleave', () => { tooltip.hidden = true; state.hovered = null; });

  // for tests and scripting
  Object.assign(api, {
    points,
    latentToClient(z) {
      const rect = mapCanvas.getBoundingClientRect();
      const [px, py] = map.toCanvas(z);
      return [rect.left + px * rect.width / mapCanvas.width, rect.top + py * rect.height / mapCanvas.height];
    },
    decodedPixels() {  // grey values 0..255 of the decoded canvas, row-major
      const d = decodedCtx.getImageData(0, 0, size, size).data;
      return Array.from({ length: size * size }, (_, i) => d[4 * i]);
    },
    decodeAt: (z) => requestDecode(z),  // resolves once z (or a newer point) is drawn
    selectProgression(index) { $('progression-select').value = String(index); redraw(index); },
    mapPixel(z) {  // [r, g, b] of the map (without the cursor) at latent z
      const [px, py] = map.toCanvas(z), i = 4 * (Math.floor(py) * mapCanvas.width + Math.floor(px));
      return Array.from(base.data.slice(i, i + 3));
    },
    mapHash() {  // FNV-1a of the map's pixels (without the cursor): tells redraws apart
      let h = 0x811c9dc5;
      for (let i = 0; i < base.data.length; i++) h = Math.imul(h ^ base.data[i], 0x01000193);
      return h >>> 0;
    },
    tooltipPixels() {  // grey values 0..255 of the tooltip thumbnail, row-major
      const c = tooltipCanvas, d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      return Array.from({ length: c.width * c.height }, (_, i) => d[4 * i]);
    },
    dotCount: points.real.z.length + points.generated.z.length,
    projectedCount: projected.z.length,
    hasCloud: Boolean(cloud),
  });

  const centre = [(points.bounds[0] + points.bounds[1]) / 2, (points.bounds[2] + points.bounds[3]) / 2];
  await requestDecode(centre);
  state.ready = true;
  setStatus(`Ready: ${points.real.z.length} real and ${points.generated.z.length} generated scans`
    + `${projected.z.length ? `, ${projected.z.length} projected` : ''}${progressions.length ? `, ${progressions.length} progressions` : ''}.`);
}

// legend entries and the progression selector; hidden when points.json has no such block
function setupOverlayControls(points, redraw) {
  const projected = projectedOf(points), progressions = progressionsOf(points);
  $('legend-projected').hidden = !projected.z.length;
  $('n-projected').textContent = projected.z.length;
  $('legend-path').hidden = !progressions.length;
  const select = $('progression-select');
  select.innerHTML = '';
  progressions.forEach((p, i) => select.add(new Option(`${i + 1}. ${p.name} (${p.z.length} steps)`, String(i))));
  select.add(new Option('no path', '-1'));
  select.value = progressions.length ? '0' : '-1';
  select.addEventListener('change', () => redraw(Number(select.value)));
}

main().catch((err) => {
  console.warn('latent widget:', err);
  showError(err && err.message ? err.message : err);
});
