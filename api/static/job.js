// Job page: live progress and a sortable, filterable table of its studies with their
// metrics and MIP biomarkers (docs/BIOMARKERS.md).
"use strict";
(() => {
  const t = window.tumorseg;
  const table = document.getElementById("studies");
  const tbody = table.querySelector("tbody");
  const filterText = document.getElementById("study-filter");
  const filterStatus = document.getElementById("status-filter");
  let rows = [];
  const sort = t.sortable(table, "position", () => draw());

  function row(study) {
    const m = study.metrics || {};
    const b = study.biomarkers || {};
    return {
      id: study.id,
      position: study.position,
      filename: study.filename,
      status: study.status,
      error: study.error,
      lesions: m.lesions ?? null,
      largest: m.largest_lesion_px ?? null,
      tumor_pixels: m.tumor_pixels ?? null,
      tumor_area_cm2: b.tumor_area_cm2 ?? null,
      tumor_fraction: m.tumor_fraction ?? null,
      sdmax_px: b.sdmax_px ?? null,
      sdmax_cm: b.sdmax_cm ?? null,
      sdmax_per_height: b.sdmax_per_height ?? null,
      dice: m.dice ?? null,
    };
  }

  // "1234 px · 5.67 cm²": the value in pixels, and in cm where the spacing is known.
  function withCm(px, unit, digits, cm, cmUnit) {
    if (px === null) { return "—"; }
    return t.num(px, digits) + " " + unit + (cm === null ? "" : " · " + t.num(cm, 2) + " " + cmUnit);
  }

  function draw() {
    const text = filterText.value.trim().toLowerCase();
    const status = filterStatus.value;
    const shown = rows.filter((r) => (!status || r.status === status)
      && (!text || r.filename.toLowerCase().includes(text)
          || t.statusWords(r.status).includes(text) || (r.error || "").toLowerCase().includes(text)));
    shown.sort(sort.compare);
    tbody.replaceChildren();
    for (const r of shown) {
      const tr = document.createElement("tr");
      tr.dataset.studyId = r.id;
      t.cell(tr, String(r.position + 1), "num");
      const link = document.createElement("a");
      link.href = "/ui/studies/" + r.id;
      link.textContent = r.filename;
      t.cell(tr, "").appendChild(link);
      const td = t.cell(tr, t.statusWords(r.status), "status-cell");
      if (r.error) {  // why it failed, in the row itself
        const reason = document.createElement("div");
        reason.className = "reason error";
        reason.textContent = r.error;
        td.appendChild(reason);
      }
      t.cell(tr, r.lesions === null ? "—" : String(r.lesions), "num");
      t.cell(tr, r.largest === null ? "—" : String(r.largest), "num");
      t.cell(tr, withCm(r.tumor_pixels, "px", 0, r.tumor_area_cm2, "cm²"), "num");
      t.cell(tr, r.tumor_fraction === null ? "—" : t.num(r.tumor_fraction * 100, 3) + " %", "num");
      t.cell(tr, withCm(r.sdmax_px, "px", 1, r.sdmax_cm, "cm"), "num");
      t.cell(tr, t.num(r.sdmax_per_height, 3), "num");
      t.cell(tr, t.num(r.dice, 4), "num");
      tbody.appendChild(tr);
    }
    document.getElementById("study-shown").textContent = shown.length + " of " + rows.length + " studies";
  }

  function render(job) {
    const status = document.getElementById("job-status");
    status.textContent = t.statusWords(job.status);
    status.dataset.status = job.status;
    document.getElementById("job-progress").value = job.progress;
    document.getElementById("job-progress-text").textContent = t.percent(job.progress);
    document.getElementById("job-counts").textContent = Object.entries(job.counts)
      .filter(([, n]) => n > 0).map(([s, n]) => n + " " + t.statusWords(s)).join(" · ");
    document.getElementById("job-model").textContent = job.model_version || "not yet chosen";
    document.getElementById("job-dice").textContent = t.num(job.aggregates.mean_dice, 4)
      + (job.aggregates.labelled_studies ? " over " + job.aggregates.labelled_studies + " labelled" : "");
    const warning = document.getElementById("job-warning");
    warning.hidden = !job.warning;
    warning.textContent = job.warning || "";
    rows = job.studies.map(row);
    draw();
    return !t.finished(job.status);
  }

  filterText.addEventListener("input", draw);
  filterStatus.addEventListener("change", draw);

  const job = t.embedded("job-data");
  if (render(job)) {
    t.poll(async () => {
      const fresh = await t.getJSON("/ui/api/jobs/" + job.id);
      return fresh ? render(fresh) : true;
    }, 1000);
  }
})();
