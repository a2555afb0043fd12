// Shared helpers of the viewer pages: JSON embedded in the page, polling, formatting.
"use strict";
window.tumorseg = {
  embedded(id) {
    return JSON.parse(document.getElementById(id).textContent);
  },
  // Fetch JSON with the session cookie; a lost session (redirect to sign-in) reloads the page.
  async getJSON(url) {
    const res = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (res.redirected || res.status === 401) { window.location.reload(); return null; }
    if (!res.ok) { throw new Error(url + ": HTTP " + res.status); }
    return res.json();
  },
  // Call fn every ms until it returns false; errors are logged and retried.
  poll(fn, ms) {
    const tick = async () => {
      let again = true;
      try { again = await fn(); } catch (err) { console.warn(err); }
      if (again !== false) { window.setTimeout(tick, ms); }
    };
    window.setTimeout(tick, ms);
  },
  // Sort a table by a click on a header with data-key (the same header again reverses):
  // returns the {key, dir, compare} state (compare orders two rows for Array.sort), and
  // redraws after a click.
  sortable(table, key, redraw) {
    const state = {
      key,
      dir: 1,
      // rows by the chosen column; empty cells last in both directions, ties by `key`
      compare(a, b) {
        const x = a[state.key];
        const y = b[state.key];
        if (x === y) { return a[key] - b[key]; }
        if (x === null) { return 1; }
        if (y === null) { return -1; }
        return (typeof x === "number" ? x - y : String(x).localeCompare(String(y))) * state.dir;
      },
    };
    for (const th of table.querySelectorAll("th[data-key]")) {
      th.addEventListener("click", () => {
        state.dir = state.key === th.dataset.key ? -state.dir : 1;
        state.key = th.dataset.key;
        for (const other of table.querySelectorAll("th")) { other.removeAttribute("aria-sort"); }
        th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        redraw();
      });
    }
    return state;
  },
  // A status as the pages show it: "partially_failed" is "partially failed" (the
  // templates' status_words filter does the same on the server).
  statusWords(status) {
    return String(status).replaceAll("_", " ");
  },
  finished(status) {
    return ["succeeded", "partially_failed", "failed", "cancelled"].includes(status);
  },
  cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    tr.appendChild(td);
    return td;
  },
  num(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  },
  percent(progress) {
    return Math.round(progress * 100) + " %";
  },
};
