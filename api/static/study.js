// Study page: the mask drawn in red over the MIP on a canvas (or, for a labelled study,
// the comparison with the label), and the sortable lesions, each boxed on hover or click.
"use strict";
(() => {
  const t = window.tumorseg;
  const mask = document.getElementById("mask-image");
  const base = document.getElementById("study-image");
  if (!mask) { return; }
  const canvas = document.createElement("canvas");
  canvas.id = "mask-layer";
  mask.after(canvas);
  const toggle = document.getElementById("mask-toggle");
  const opacity = document.getElementById("mask-opacity");
  const mode = document.getElementById("overlay-mode");
  const comparison = document.getElementById("comparison-image");
  const legend = document.getElementById("comparison-legend");

  // -- overlay: the predicted mask, or the mask against the label ----------------------
  function style() {
    const compare = mode !== null && mode.value === "comparison";
    if (compare && !comparison.getAttribute("src")) { comparison.src = comparison.dataset.src; }
    canvas.hidden = !toggle.checked || compare;
    if (comparison) { comparison.hidden = !toggle.checked || !compare; }
    if (legend) { legend.hidden = !compare; }
    for (const layer of [canvas, comparison]) {
      if (layer) { layer.style.opacity = String(opacity.value / 100); }
    }
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
  if (mode) { mode.addEventListener("change", style); }
  style();
  if (mask.complete && mask.naturalWidth) { paint(); } else { mask.addEventListener("load", paint); }

  // -- lesions: a sortable table; the row pointed at or selected is boxed on the image --
  const table = document.getElementById("lesions");
  const box = document.getElementById("lesion-box");
  if (!table) { return; }
  const tbody = table.querySelector("tbody");
  const lesions = t.embedded("study-data").lesions || [];
  const byNumber = new Map(lesions.map((l) => [l.number, l]));
  const sort = t.sortable(table, "number", () => draw());
  let selected = null;  // the clicked lesion's number
  let shown = null;  // the boxed lesion's number

  // Box a lesion: its bbox (input pixels, ends excluded) scaled to the image as displayed
  // (the image keeps its aspect ratio inside its element, centred when letterboxed).
  function place(number) {
    const lesion = number === null ? null : byNumber.get(number);
    if (!lesion || !base.naturalWidth) {
      box.hidden = true;
      delete box.dataset.lesion;
      shown = null;
      return;
    }
    const [row0, col0, row1, col1] = lesion.bbox;
    const scale = Math.min(base.clientWidth / base.naturalWidth, base.clientHeight / base.naturalHeight);
    const left = base.offsetLeft + (base.clientWidth - base.naturalWidth * scale) / 2;
    const top = base.offsetTop + (base.clientHeight - base.naturalHeight * scale) / 2;
    box.style.left = (left + col0 * scale) + "px";
    box.style.top = (top + row0 * scale) + "px";
    box.style.width = ((col1 - col0) * scale) + "px";
    box.style.height = ((row1 - row0) * scale) + "px";
    box.dataset.lesion = String(lesion.number);
    box.title = "lesion " + lesion.number;
    box.hidden = false;
    shown = number;
  }

  function select(number) {
    selected = selected === number ? null : number;
    for (const tr of tbody.rows) {
      const on = Number(tr.dataset.lesion) === selected;
      tr.classList.toggle("selected", on);
      tr.setAttribute("aria-selected", on ? "true" : "false");
    }
    place(selected);
  }

  function draw() {
    tbody.replaceChildren();
    for (const l of [...lesions].sort(sort.compare)) {
      const tr = document.createElement("tr");
      tr.dataset.lesion = String(l.number);
      tr.tabIndex = 0;
      tr.classList.toggle("selected", l.number === selected);
      tr.setAttribute("aria-selected", l.number === selected ? "true" : "false");
      t.cell(tr, String(l.number), "num");
      t.cell(tr, String(l.area_px), "num");
      t.cell(tr, t.num(l.area_mm2, 1), "num");
      t.cell(tr, Math.round(l.centroid_row) + ", " + Math.round(l.centroid_col), "num");
      t.cell(tr, t.num(l.relative_height, 2), "num");
      t.cell(tr, t.num(l.peak_uptake, 2), "num");
      t.cell(tr, t.num(l.mean_uptake, 2), "num");
      t.cell(tr, t.num(l.peak_probability, 2), "num");
      tbody.appendChild(tr);
    }
  }

  function rowOf(event) {
    const tr = event.target.closest("tr[data-lesion]");
    return tr ? Number(tr.dataset.lesion) : null;
  }

  tbody.addEventListener("mouseover", (e) => {
    const n = rowOf(e);
    if (n !== null && n !== shown) { place(n); }
  });
  tbody.addEventListener("mouseleave", () => place(selected));
  tbody.addEventListener("focusin", (e) => place(rowOf(e)));
  tbody.addEventListener("focusout", () => place(selected));
  tbody.addEventListener("click", (e) => {
    const n = rowOf(e);
    if (n !== null) { select(n); }
  });
  tbody.addEventListener("keydown", (e) => {
    const n = rowOf(e);
    if (n !== null && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); select(n); }
  });
  window.addEventListener("resize", () => place(shown));
  base.addEventListener("load", () => place(shown));
  draw();
})();
