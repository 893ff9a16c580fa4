// artemis's preprocessing in the browser, value for value: a decoded 8-bit RGB picture is
// framed (for a run trained with `--framing head`: cropped and stretched as
// crates/data/src/framing.rs does it, in the same integer steps) and resized to the network's input exactly as crates/data/src/image_io.rs `resize_rgb` does it,
// then turned into a float32 [3, height, width] tensor with the run's own table of the 3 x 256
// input values (`input_table` of model.json, computed by artemis's `Scaling::table`).
//
// The resize is fast_image_resize 6.1's convolution with its bilinear filter (kernel widened
// by the downscaling factor, i.e. antialiased) in its integer form for 8-bit pixels
// (convolution/mod.rs `precompute_coefficients`, optimisations.rs `Normalizer16`,
// resizer.rs `do_convolution`): coefficients rounded to i16 at `precision` fractional bits,
// i32 sums started at half a unit, the vertical pass first and then the horizontal one, each
// result clipped to 0..255. Every step below names the step it copies; a test in
// tests/browser_local.rs compares the tensor this builds with artemis's, bit for bit.

/** The bilinear filter (support 1). */
function bilinear(x) {
  x = Math.abs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

/** `precompute_coefficients(in_size, 0, in_size, out_size, bilinear, 1.0, true)`. */
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1.0);
  const radius = 1.0 * filterScale;
  const window = Math.ceil(radius) * 2 + 1;
  const recip = 1.0 / filterScale;
  const values = [];
  const bounds = [];
  for (let out = 0; out < outSize; out++) {
    const inCenter = 0 + (out + 0.5) * scale;
    const xMin = Math.max(Math.floor(inCenter - radius), 0);
    const xMax = Math.min(Math.ceil(inCenter + radius), inSize);
    const first = values.length;
    const center = inCenter - 0.5;
    let ww = 0.0;
    let start = xMin;
    let end = xMax;
    for (let x = xMin; x < xMax; x++) {
      const w = bilinear((x - center) * recip);
      if (x === start && w === 0) {
        start += 1;
      } else {
        values.push(w);
        ww += w;
      }
    }
    // Zero coefficients at the end are dropped (the Rust loop walks back over all of them).
    for (let i = values.length - 1; i >= 0; i--) {
      if (end <= start || values[i] !== 0) break;
      end -= 1;
    }
    if (ww !== 0.0) {
      for (let i = first; i < values.length; i++) values[i] /= ww;
    }
    while (values.length < first + window) values.push(0.0);
    bounds.push({ start, size: end - start });
  }
  return { values, window, bounds };
}

/** `Normalizer16::new`: i16 coefficients and their precision. */
function normalize(c) {
  let maxWeight = 0.0;
  for (const v of c.values) maxWeight = Math.max(maxWeight, v);
  let precision = 0;
  for (let p = 0; p < 22; p++) {
    precision = p;
    if (Math.round(maxWeight * 2 ** (p + 1)) >= 1 << 15) break;
  }
  const unit = 2 ** precision;
  const chunks = c.bounds.map((b, i) => ({
    start: b.start,
    k: Int32Array.from(c.values.slice(i * c.window, i * c.window + b.size), (v) => Math.round(v * unit)),
  }));
  return { precision, chunks };
}

/** `Normalizer16::clip`: the sum at `precision` bits to 0..255. */
function clip(sum, precision) {
  const v = sum >> precision;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** The vertical pass: `src` (w x h x 3) to w x n.chunks.length x 3. */
function vertical(src, w, n) {
  const out = new Uint8Array(w * n.chunks.length * 3);
  const initial = 1 << (n.precision - 1);
  const row = w * 3;
  n.chunks.forEach((c, y) => {
    for (let i = 0; i < row; i++) {
      let s = initial;
      for (let j = 0; j < c.k.length; j++) s += src[(c.start + j) * row + i] * c.k[j];
      out[y * row + i] = clip(s, n.precision);
    }
  });
  return out;
}

/** The horizontal pass: `src` (w x h x 3) to n.chunks.length x h x 3. */
function horizontal(src, w, h, n) {
  const dw = n.chunks.length;
  const out = new Uint8Array(dw * h * 3);
  const initial = 1 << (n.precision - 1);
  for (let y = 0; y < h; y++) {
    n.chunks.forEach((c, x) => {
      for (let ch = 0; ch < 3; ch++) {
        let s = initial;
        for (let j = 0; j < c.k.length; j++) s += src[(y * w + c.start + j) * 3 + ch] * c.k[j];
        out[(y * dw + x) * 3 + ch] = clip(s, n.precision);
      }
    });
  }
  return out;
}

/** `resize_exact` for 8-bit RGB: (sw, sh) to (dw, dh). */
function resizeExact(src, sw, sh, dw, dh) {
  if (sw === dw && sh === dh) return src;
  let pixels = src;
  if (sh !== dh) pixels = vertical(pixels, sw, normalize(coefficients(sh, dh)));
  if (sw !== dw) pixels = horizontal(pixels, sw, dh, normalize(coefficients(sw, dw)));
  return pixels;
}

/**
 * `resize_rgb`: stretched (`squash`) or scaled to fit and centred on black (`keep-aspect`).
 * @param {Uint8Array} rgb packed RGB, `sw * sh * 3` bytes
 * @returns {Uint8Array} packed RGB at `width` x `height`
 */
export function resizeRgb(rgb, sw, sh, width, height, mode) {
  let [rw, rh] = [width, height];
  if (mode === "keep-aspect") {
    const s = Math.min(width / sw, height / sh);
    rw = Math.min(Math.max(Math.round(sw * s), 1), width);
    rh = Math.min(Math.max(Math.round(sh * s), 1), height);
  }
  const resized = resizeExact(rgb, sw, sh, rw, rh);
  if (rw === width && rh === height) return resized;
  const out = new Uint8Array(width * height * 3);
  const [ox, oy] = [Math.floor((width - rw) / 2), Math.floor((height - rh) / 2)];
  for (let y = 0; y < rh; y++) {
    out.set(resized.subarray(y * rw * 3, (y + 1) * rw * 3), ((oy + y) * width + ox) * 3);
  }
  return out;
}

/** `framing::percentile`: the k-th smallest, k = max(1, ceil(n * num / den)), of a histogram. */
function percentile(hist, num, den) {
  const n = hist.reduce((a, b) => a + b, 0);
  const k = Math.max(1, Math.ceil((n * num) / den));
  let seen = 0;
  for (let v = 0; v < 256; v++) {
    seen += hist[v];
    if (seen >= k) return v;
  }
  return 255;
}

/** `framing::head`: cropped to the head, its intensities stretched (crates/data/src/framing.rs). */
export function frameHead(rgb, w, h) {
  const value = new Uint8Array(w * h);
  const hist = new Array(256).fill(0);
  for (let i = 0; i < w * h; i++) {
    value[i] = Math.max(rgb[i * 3], rgb[i * 3 + 1], rgb[i * 3 + 2]);
    hist[value[i]]++;
  }
  const t = Math.floor(percentile(hist, 995, 1000) / 10);
  const rows = new Array(h).fill(0);
  const cols = new Array(w).fill(0);
  for (let i = 0; i < w * h; i++) {
    if (value[i] > t) {
      rows[Math.floor(i / w)]++;
      cols[i % w]++;
    }
  }
  const span = (counts, len) => {
    const inside = (c) => c * 50 > len;
    const first = counts.findIndex(inside);
    const last = counts.findLastIndex(inside);
    return first >= 0 && last + 1 - first >= 16 ? [first, last + 1] : null;
  };
  let [r, c] = [span(rows, w), span(cols, h)];
  if (!r || !c) [r, c] = [[0, h], [0, w]];
  const [cw, ch] = [c[1] - c[0], r[1] - r[0]];
  const out = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) {
    const from = ((r[0] + y) * w + c[0]) * 3;
    out.set(rgb.subarray(from, from + cw * 3), y * cw * 3);
  }
  const fg = new Array(256).fill(0);
  for (let i = 0; i < cw * ch; i++) {
    const v = Math.max(out[i * 3], out[i * 3 + 1], out[i * 3 + 2]);
    if (v > t) fg[v]++;
  }
  if (fg.some((n) => n > 0)) {
    const [lo, hi] = [percentile(fg, 1, 100), percentile(fg, 99, 100)];
    if (hi > lo) {
      const d = hi - lo;
      const map = Array.from({ length: 256 }, (_, x) => {
        const v = Math.min(Math.max(x, lo), hi);
        return Math.floor(((v - lo) * 255 + Math.floor(d / 2)) / d);
      });
      for (let i = 0; i < out.length; i++) out[i] = map[out[i]];
    }
  }
  return { rgb: out, w: cw, h: ch };
}

/**
 * The network input of a decoded picture: `Preprocess::resize` (framing, then the resize) then
 * `write_chw`.
 * @param {Uint8Array} rgb packed RGB, `w * h * 3` bytes
 * @param {{width: number, height: number, resize: string, framing?: string}} pre the run's
 *   preprocessing
 * @param {number[][]} table `input_table`: 3 channels x 256 values
 * @returns {Float32Array} [3, height, width]
 */
export function toTensor(rgb, w, h, pre, table) {
  if (pre.framing === "head") ({ rgb, w, h } = frameHead(rgb, w, h));
  const px = resizeRgb(rgb, w, h, pre.width, pre.height, pre.resize);
  const plane = pre.width * pre.height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    const t = Float32Array.from(table[c]);
    for (let i = 0; i < plane; i++) out[c * plane + i] = t[px[i * 3 + c]];
  }
  return out;
}

/** `softmax(logits / t)`, as artemis_report::prob::softmax_t. */
export function softmaxT(logits, t) {
  const z = Array.from(logits, (v) => v / t);
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}
