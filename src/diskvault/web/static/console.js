/* diskvault console: progressive enhancement only; every page works without it. */
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  let cached = null;
  async function liveToken() {
    if (cached && cached.until > Date.now()) return cached.token;
    const r = await fetch("/session/live-token", { credentials: "same-origin" });
    if (r.redirected || !r.ok) { location.reload(); throw new Error("signed out"); }
    const body = await r.json();
    cached = { token: body.token, until: Date.now() + (body.expires_in - 30) * 1000 };
    return cached.token;
  }
  const human = (n) => {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n.toFixed(0)) + " " + u[i];
  };
  const dur = (s) => { s = Math.round(s); return s >= 3600 ? Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s"; };

  function paint(el, m) {
    const pct = Math.max(0, Math.min(100, m.percent || 0));
    el.querySelector("progress").value = pct;
    el.querySelector(".pct").textContent = pct.toFixed(1) + "%";
    el.querySelector(".rate").textContent = m.rate_bytes_per_s ? human(m.rate_bytes_per_s) + "/s" : "";
    el.querySelector(".eta").textContent = m.eta_s ? "ETA " + dur(m.eta_s) : "";
    const state = el.querySelector(".state");
    state.textContent = m.status + (m.error ? ": " + m.error : "");
    state.className = "state s-" + m.status;
    el.dataset.status = m.status;
    const chart = el.parentElement && el.parentElement.querySelector("svg.spark");
    if (chart && m.rate_bytes_per_s != null) spark(chart, m.rate_bytes_per_s);
  }

  /* Throughput over time, from the WebSocket's progress samples. */
  function spark(svg, rate) {
    const samples = (svg.samples = (svg.samples || []).concat([rate]).slice(-120));
    const top = Math.max(...samples) || 1;
    const w = 240, h = 40, step = w / Math.max(1, samples.length - 1);
    const points = samples.map((r, i) => (i * step).toFixed(1) + "," + (h - (h * r) / top).toFixed(1)).join(" ");
    svg.querySelector("polyline").setAttribute("points", points);
    svg.querySelector("title").textContent = "throughput, peak " + human(top) + "/s";
    svg.hidden = false;
  }

  async function follow(el, onDone) {
    if (el.dataset.following) return;
    el.dataset.following = "1";
    const token = await liveToken();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(proto + "//" + location.host + "/ws/jobs/" + encodeURIComponent(el.dataset.job));
    ws.onopen = () => ws.send(JSON.stringify({ token: token }));
    ws.onmessage = (ev) => {
      const m = JSON.parse(ev.data);
      if (m.status) paint(el, m);
      if (!["completed", "error", "cancelled"].includes(m.type)) return;
      if (onDone) onDone(m);
      else if (el.dataset.reload) setTimeout(() => location.reload(), 300);
    };
  }
  function followAll(root) {
    root.querySelectorAll(".progress[data-job]").forEach((el) => {
      if (["queued", "running"].includes(el.dataset.status)) follow(el, null);
    });
  }

  function upload(form) {
    const out = form.querySelector(".upload-progress");
    const bar = out.querySelector("progress");
    const text = out.querySelector(".upload-text");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      data.delete("csrf");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/v1/images/upload");
      xhr.setRequestHeader("Authorization", "Bearer " + (await liveToken()));
      out.hidden = false;
      const started = Date.now();
      xhr.upload.onprogress = (e) => {
        if (!e.lengthComputable) return;
        bar.max = e.total; bar.value = e.loaded;
        const rate = e.loaded / Math.max(0.001, (Date.now() - started) / 1000);
        text.textContent = "Uploading: " + human(e.loaded) + " of " + human(e.total) + " (" + (100 * e.loaded / e.total).toFixed(1) + "%, " + human(rate) + "/s)";
      };
      xhr.onerror = () => { text.textContent = "The upload was interrupted; nothing was kept. Upload again."; text.className = "upload-text s-error"; };
      xhr.onload = () => {
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status >= 400) {
          text.textContent = "Refused: " + (body.detail || xhr.statusText);
          text.className = "upload-text s-error";
          return;
        }
        text.innerHTML = "";
        const link = document.createElement("a");
        link.href = "/images/" + encodeURIComponent(body.id);
        link.textContent = body.name;
        text.append("Uploaded ", link, "; checking and converting…");
        if (!body.job_id) { location.href = link.href; return; }
        const job = document.createElement("div");
        job.className = "progress"; job.dataset.job = body.job_id; job.dataset.status = "queued";
        job.innerHTML = '<progress max="100" value="0" aria-label="conversion progress"></progress><span class="pct"></span><span class="rate"></span><span class="eta"></span><span class="state"></span>';
        out.append(job);
        follow(job, () => { setTimeout(() => { location.href = link.href; }, 300); });
      };
      xhr.send(data);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.body.addEventListener("htmx:configRequest", (e) => { e.detail.headers["X-CSRF-Token"] = csrf(); });
    document.body.addEventListener("htmx:afterSwap", (e) => followAll(e.target));
    document.body.addEventListener("submit", (e) => {
      const msg = e.target.dataset && e.target.dataset.confirm;
      if (msg && !confirm(msg)) e.preventDefault();
    }, true);
    document.querySelectorAll("form.upload").forEach(upload);
    followAll(document);
    document.querySelectorAll("[data-countdown]").forEach((el) => {
      let left = Number(el.dataset.countdown);
      setInterval(() => { left = Math.max(0, left - 1); el.textContent = dur(left); }, 1000);
    });
  });
})();
