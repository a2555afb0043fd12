// Study page: the mask drawn in red over the MIP on a canvas (or, for a labelled study,
// the comparison with the label), and the sortable lesions, each boxed on hover or click.
"use strict";
(() => {
  const t = window.tumorseg;
  const viewer = document.getElementById("viewer");
  const mask = document.getElementById("mask-image");
  const base = document.getElementById("study-image");
  const study = t.embedded("study-data");

  // -- one box for the image and its layers: the viewer takes the study's proportions --
  // (ui.css sizes it); the image, the canvas, the comparison and the lesion box fill it or
  // are placed in fractions of it, so they stay together at any window size and zoom.
  function fit(width, height) {
    if (!width || !height) { return; }
    viewer.style.setProperty("--study-width", String(width));
    viewer.style.setProperty("--study-height", String(height));
    viewer.classList.add("fitted");
  }
  if (study.metrics) { fit(study.metrics.width, study.metrics.height); }
  if (base.complete && base.naturalWidth) {
    fit(base.naturalWidth, base.naturalHeight);
  } else {
    base.addEventListener("load", () => fit(base.naturalWidth, base.naturalHeight));
  }
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
  const lesions = study.lesions || [];
  const byNumber = new Map(lesions.map((l) => [l.number, l]));
  const sort = t.sortable(table, "number", () => draw());
  let selected = null;  // the clicked lesion's number
  let shown = null;  // the boxed lesion's number

  // Box a lesion: its bbox (input pixels, ends excluded) in percent of the viewer's box,
  // which is the image's, so it stays on the lesion when the window or the zoom changes.
  function place(number) {
    const lesion = number === null ? null : byNumber.get(number);
    const width = base.naturalWidth || (study.metrics && study.metrics.width);
    const height = base.naturalHeight || (study.metrics && study.metrics.height);
    if (!lesion || !width || !height) {
      box.hidden = true;
      delete box.dataset.lesion;
      shown = null;
      return;
    }
    const [row0, col0, row1, col1] = lesion.bbox;
    const percent = (value, whole) => (100 * value / whole) + "%";
    box.style.left = percent(col0, width);
    box.style.top = percent(row0, height);
    box.style.width = percent(col1 - col0, width);
    box.style.height = percent(row1 - row0, height);
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
  base.addEventListener("load", () => place(shown));
  draw();
})();
