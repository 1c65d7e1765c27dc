// The search page of `semcbir serve`: pick, drop or paste an image (or choose an indexed
// one), see its top-k as thumbnails, select a result to search by it, change k.
// Data from the server (file names, keys, messages) only ever goes into textContent,
// attributes and URLs built from integer ids: never into innerHTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { info: null, last: null, objectUrl: null, seq: 0 };

  function setStatus(text, isError = false) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("error", isError);
  }

  function basename(key) {
    if (!key) return "";
    const parts = String(key).split(/[\\/]/);
    return parts[parts.length - 1];
  }

  function formatDistance(d) {
    if (state.info && state.info.integer_distances) return String(d);
    return Number(d).toFixed(4);
  }

  function mib(bytes) {
    return `${(bytes / 1048576).toFixed(bytes % 1048576 ? 1 : 0)} MiB`;
  }

  async function loadInfo() {
    try {
      const resp = await fetch("info");
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const info = await resp.json();
      state.info = info;
      $("index-info").textContent =
        `${info.index}: ${info.count} images, ${info.describe}` +
        (info.model ? `; model ${info.model}` : "");
      const k = $("k");
      k.max = String(info.options.k.max);
      if (!state.last) k.value = String(info.options.k.default);
      if (!info.uploads) {
        $("file").disabled = true;
        $("drop").classList.add("disabled");
        $("drop-hint").textContent = "this server has no model: search by an indexed image";
      }
      if (!info.count) $("random").disabled = true;
    } catch (err) {
      $("index-info").textContent = "";
      setStatus(`Cannot reach the server (${err.message}).`, true);
    }
  }

  function currentK() {
    const input = $("k");
    const max = state.info ? state.info.options.k.max : 100;
    const k = Number(input.value);
    if (!Number.isInteger(k) || k < 1 || k > max) {
      setStatus(`Results must be a whole number from 1 to ${max}.`, true);
      input.focus();
      return null;
    }
    return k;
  }

  function showQuery(src, caption) {
    if (state.objectUrl && state.objectUrl !== src) {
      URL.revokeObjectURL(state.objectUrl);
      state.objectUrl = null;
    }
    const img = $("query-img");
    img.src = src;
    $("query-caption").textContent = caption || "";
    $("query").hidden = false;
  }

  async function post(body) {
    const seq = ++state.seq;
    setStatus("Searching\u2026");
    document.body.classList.add("busy");
    let resp;
    let data = null;
    try {
      resp = await fetch("search", { method: "POST", body });
      try { data = await resp.json(); } catch (_) { data = null; }
    } catch (err) {
      if (seq === state.seq) setStatus("The server cannot be reached.", true);
      return null;
    } finally {
      if (seq === state.seq) document.body.classList.remove("busy");
    }
    if (seq !== state.seq) return null; // a newer query was started meanwhile
    if (!resp.ok) {
      setStatus((data && typeof data.detail === "string") ? data.detail
        : `The server answered ${resp.status}.`, true);
      clearResults();
      return null;
    }
    return data;
  }

  function clearResults() {
    $("results").replaceChildren();
    $("results-title").hidden = true;
  }

  function render(data) {
    const list = $("results");
    const items = [];
    for (const r of data.results) {
      const li = document.createElement("li");
      const btn = document.createElement("button");
      btn.type = "button";
      btn.className = "hit";
      btn.dataset.id = String(r.id);
      const name = basename(r.key) || `id ${r.id}`;
      const dist = formatDistance(r.distance);
      btn.title = r.key || name;
      btn.setAttribute("aria-label",
        `Result ${r.rank}: ${name}, distance ${dist}. Search by this image.`);
      const img = document.createElement("img");
      img.alt = "";
      img.loading = "lazy";
      img.decoding = "async";
      img.src = `thumbs/${encodeURIComponent(String(r.id))}`;
      const meta = document.createElement("span");
      meta.className = "meta";
      const rank = document.createElement("span");
      rank.className = "rank";
      rank.textContent = `#${r.rank}`;
      const d = document.createElement("span");
      d.className = "distance";
      d.textContent = `d = ${dist}` + (r.penalised ? " (filtered)" : "");
      const key = document.createElement("span");
      key.className = "key";
      key.textContent = name;
      meta.append(rank, d);
      btn.append(img, meta, key);
      btn.addEventListener("click", () => go(r.id));
      li.append(btn);
      items.push(li);
    }
    list.replaceChildren(...items);
    $("results-title").hidden = items.length === 0;
    const t = data.timings && data.timings.total_ms;
    const n = data.results.length;
    setStatus(`${n} result${n === 1 ? "" : "s"} by ${data.distance}` +
      (t !== undefined ? ` in ${Math.round(t)} ms` : "") + ".");
  }

  async function searchFile(file) {
    if (!file) return;
    const limits = state.info && state.info.limits;
    if (limits && file.size > limits.max_upload_bytes) {
      setStatus(`${file.name}: too large (${mib(file.size)}; the limit is ` +
        `${mib(limits.max_upload_bytes)}).`, true);
      return;
    }
    const k = currentK();
    if (k === null) return;
    state.last = { file };
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    const url = URL.createObjectURL(file);
    showQuery(url, file.name || "pasted image");
    state.objectUrl = url;
    const fd = new FormData();
    fd.append("image", file, file.name || "pasted-image");
    fd.append("k", String(k));
    const data = await post(fd);
    if (data) render(data);
  }

  async function searchId(id) {
    const k = currentK();
    if (k === null) return;
    state.last = { id };
    showQuery(`images/${encodeURIComponent(String(id))}`, `indexed image ${id}`);
    const fd = new FormData();
    fd.append("id", String(id));
    fd.append("k", String(k));
    const data = await post(fd);
    if (!data) return;
    if (data.query && data.query.key) $("query-caption").textContent = basename(data.query.key);
    render(data);
  }

  function idFromHash() {
    const m = /^#id=(\d{1,19})$/.exec(location.hash);
    return m ? m[1] : null;
  }

  function go(id) {
    const hash = `#id=${id}`;
    if (location.hash === hash) searchId(String(id));
    else location.hash = hash; // hashchange runs the search; Back returns to the last one
    window.scrollTo({ top: 0, behavior: "smooth" });
  }

  function rerun() {
    if (!state.last) return;
    if (state.last.file) searchFile(state.last.file);
    else searchId(state.last.id);
  }

  function firstImage(files) {
    for (const f of files || []) if (f.type.startsWith("image/") || !f.type) return f;
    return files && files.length ? files[0] : null;
  }

  function wire() {
    $("file").addEventListener("change", (e) => {
      const f = e.target.files && e.target.files[0];
      searchFile(f);
      e.target.value = ""; // choosing the same file again searches again
    });
    $("k").addEventListener("change", () => { if (currentK() !== null) rerun(); });
    $("k").addEventListener("keydown", (e) => { if (e.key === "Enter") rerun(); });
    $("random").addEventListener("click", async () => {
      try {
        const resp = await fetch("random");
        const data = await resp.json();
        if (!resp.ok) throw new Error(data.detail || `HTTP ${resp.status}`);
        go(data.id);
      } catch (err) {
        setStatus(`No random image: ${err.message}`, true);
      }
    });
    const drop = $("drop");
    for (const ev of ["dragenter", "dragover"]) {
      document.addEventListener(ev, (e) => {
        e.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const ev of ["dragleave", "dragend"]) {
      document.addEventListener(ev, (e) => {
        if (!e.relatedTarget) drop.classList.remove("over");
      });
    }
    document.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      if (state.info && !state.info.uploads) return;
      searchFile(firstImage(e.dataTransfer && e.dataTransfer.files));
    });
    document.addEventListener("paste", (e) => {
      if (state.info && !state.info.uploads) return;
      const f = firstImage(e.clipboardData && e.clipboardData.files);
      if (f) searchFile(f);
    });
    window.addEventListener("hashchange", () => {
      const id = idFromHash();
      if (id !== null) searchId(id);
    });
  }

  wire();
  loadInfo().then(() => {
    const id = idFromHash();
    if (id !== null) searchId(id);
  });
})();
