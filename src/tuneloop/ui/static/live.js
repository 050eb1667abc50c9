// The live training view: polls the run's JSON endpoint and redraws; a failed fetch retries, so a dropped
// connection or a UI restart resumes by itself, and a reload picks up from the run directory's log.
(function () {
  const box = document.getElementById("live");
  if (!box) return;
  const url = box.dataset.url;
  const show = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const duration = (s) => s == null ? "-" : s >= 3600 ? `${Math.floor(s / 3600)}h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`
    : s >= 60 ? `${Math.floor(s / 60)}m ${String(Math.floor(s % 60)).padStart(2, "0")}s` : `${Math.floor(s)}s`;
  let wasRunning = box.dataset.running === "yes";
  let delay = 1000;
  async function poll() {
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const live = await response.json();
      document.getElementById("live-chart").innerHTML = live.svg;
      show("live-step", live.total ? `${live.step} / ${live.total}` : `${live.step}`);
      show("live-tps", live.tokens_per_second == null ? "-" : Math.round(live.tokens_per_second));
      show("live-eta", duration(live.eta_seconds));
      show("run-status", live.status);
      const failure = document.getElementById("run-failure");
      if (failure) { failure.hidden = !live.failure; failure.textContent = live.failure || ""; }
      show("live-connection", live.running ? "live" : "");
      delay = 1000;
      if (live.running) { wasRunning = true; setTimeout(poll, delay); return; }
      if (wasRunning) location.reload();  // finished: the report, samples and export buttons are there now
    } catch (err) {
      show("live-connection", "connection lost, retrying…");
      delay = Math.min(delay * 2, 8000);
      setTimeout(poll, delay);
    }
  }
  if (wasRunning) setTimeout(poll, 1000);
})();
