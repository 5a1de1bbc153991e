// Live updates for agentctl's pages, over server-sent events. The pages
// work without this script: reload to see a change.
(function () {
  "use strict";
  if (!window.EventSource) { return; }
  var source = new EventSource("/events/sessions");
  source.addEventListener("session", function (ev) {
    var s = JSON.parse(ev.data);
    document.querySelectorAll("[data-session]").forEach(function (el) {
      if (el.getAttribute("data-session") !== s.id) { return; }
      el.querySelectorAll("[data-field]").forEach(function (f) {
        var k = f.getAttribute("data-field");
        if (Object.prototype.hasOwnProperty.call(s, k)) { f.textContent = s[k]; }
        if (k === "status") { f.className = "badge " + s.status; }
      });
      if (!s.live) {
        el.querySelectorAll("form.stop-form").forEach(function (f) { f.remove(); });
      }
    });
  });
  source.addEventListener("resync", function () { window.location.reload(); });

  // The stop button without leaving the page; the status follows by SSE.
  document.querySelectorAll("form.stop-form").forEach(function (form) {
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var button = form.querySelector("button");
      button.disabled = true;
      fetch(form.action, { method: "POST", credentials: "same-origin" }).then(function (r) {
        button.textContent = r.ok ? "Stop requested" : "Refused (" + r.status + ")";
      }, function () {
        button.textContent = "Could not reach the server";
        button.disabled = false;
      });
    });
  });
})();
