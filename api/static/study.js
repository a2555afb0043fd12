// Study page: the mask drawn in red over the MIP on a canvas, with a toggle and opacity.
"use strict";
(() => {
  const mask = document.getElementById("mask-image");
  const base = document.getElementById("study-image");
  if (!mask) { return; }
  const canvas = document.createElement("canvas");
  canvas.id = "mask-layer";
  mask.after(canvas);
  const toggle = document.getElementById("mask-toggle");
  const opacity = document.getElementById("mask-opacity");

  function style() {
    canvas.hidden = !toggle.checked;
    canvas.style.opacity = String(opacity.value / 100);
  }

  function paint() {
    canvas.width = mask.naturalWidth;
    canvas.height = mask.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(mask, 0, 0);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const d = pixels.data;
    let tumor = 0;
    for (let i = 0; i < d.length; i += 4) {
      const on = d[i] > 127;  // competition format: 255 tumor, 0 background
      d[i] = 230; d[i + 1] = 20; d[i + 2] = 40; d[i + 3] = on ? 255 : 0;
      tumor += on ? 1 : 0;
    }
    ctx.putImageData(pixels, 0, 0);
    canvas.dataset.painted = "1";
    canvas.dataset.tumorPixels = String(tumor);
    if (base.naturalWidth && base.naturalWidth !== mask.naturalWidth) {
      console.warn("mask and image sizes differ");
    }
  }

  toggle.addEventListener("change", style);
  opacity.addEventListener("input", style);
  style();
  if (mask.complete && mask.naturalWidth) { paint(); } else { mask.addEventListener("load", paint); }
})();
