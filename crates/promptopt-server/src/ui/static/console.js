// The promptopt console's only script: a job page follows the job's event stream and, when
// something changes, swaps in the progress panel the server renders (at most every 400 ms).
// Without script the page still shows the job as it was when loaded.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var panel = live.querySelector(".panel");
  if (panel && panel.getAttribute("data-final") === "true") { return; }
  var pending = null;
  var source = null;
  function refresh() {
    pending = null;
    fetch(live.getAttribute("data-live"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        live.innerHTML = html;
        var p = live.querySelector(".panel");
        if (p && p.getAttribute("data-final") === "true" && source) {
          source.close();
          live.setAttribute("data-ended", "true");
        }
      })
      .catch(function () {});
  }
  function soon() { if (pending === null) { pending = setTimeout(refresh, 400); } }
  source = new EventSource(live.getAttribute("data-events"));
  source.onmessage = soon;
  ["job", "trial_scored", "new_best", "stage_started", "stage_finished", "stage_progress",
   "run_finished", "finished", "warning"].forEach(function (kind) {
    source.addEventListener(kind, soon);
  });
  source.addEventListener("end", function () { source.close(); refresh(); });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) { refresh(); }
  });
})();
