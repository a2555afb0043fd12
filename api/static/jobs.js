// Jobs list: rows from the embedded page, refreshed while any job is unfinished.
"use strict";
(() => {
  const t = window.tumorseg;
  const tbody = document.querySelector("#jobs tbody");

  function render(page) {
    tbody.replaceChildren();
    for (const job of page.items) {
      const tr = document.createElement("tr");
      tr.dataset.jobId = job.id;
      const link = document.createElement("a");
      link.href = "/ui/jobs/" + job.id;
      link.textContent = "job " + job.id;
      t.cell(tr, "").appendChild(link);
      t.cell(tr, job.name || "—", "name");
      const status = document.createElement("span");
      status.className = "status";
      status.dataset.status = job.status;
      status.textContent = t.statusWords(job.status);
      t.cell(tr, "").appendChild(status);
      const bar = document.createElement("progress");
      bar.max = 1;
      bar.value = job.progress;
      const td = t.cell(tr, "");
      td.append(bar, " " + t.percent(job.progress));
      t.cell(tr, String(job.total), "num");
      t.cell(tr, job.model_version || "—");
      t.cell(tr, new Date(job.timings.created_at).toLocaleString());
      tbody.appendChild(tr);
    }
    document.getElementById("jobs-empty").hidden = page.items.length > 0;
    return page.items.some((job) => !t.finished(job.status));
  }

  render(t.embedded("jobs-data"));
  t.poll(async () => {
    const page = await t.getJSON("/ui/api/jobs");
    if (page) { render(page); }
    return true;  // new jobs may appear from other clients
  }, 2000);
})();
