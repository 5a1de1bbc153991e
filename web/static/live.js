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
  // A browser allows six connections to one server over HTTP/1.1: a page
  // left (kept in the back-forward cache, or in another tab) must not
  // hold its streams, or the next page's wait behind them.
  var streams = [source];
  window.addEventListener("pagehide", function () {
    streams.forEach(function (s) { s.close(); });
  });
  window.addEventListener("pageshow", function (e) {
    if (e.persisted) { window.location.reload(); }
  });

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

  // The live log: new output as it comes, follow until the reader scrolls
  // up ("paused · N new lines"), search that marks matches in place. Text
  // goes in as text (textContent); the classes come from the server's
  // fixed set.
  var section = document.getElementById("log-section");
  if (!section) { return; }
  var log = document.getElementById("log");
  var paused = document.getElementById("log-paused");
  var fresh = document.getElementById("log-new");
  var search = document.getElementById("log-search");
  var found = document.getElementById("log-matches");
  var following = true, unseen = 0, query = "";
  var MAX_SPANS = 20000;

  function atBottom() { return log.scrollTop + log.clientHeight >= log.scrollHeight - 4; }
  function follow() {
    log.scrollTop = log.scrollHeight;
    following = true; unseen = 0; paused.hidden = true;
  }
  follow();
  log.addEventListener("scroll", function () {
    var now = atBottom();
    if (now && !following) { follow(); return; }
    if (!now && following) {
      following = false; unseen = 0; fresh.textContent = "0"; paused.hidden = false;
    }
  });
  paused.addEventListener("click", follow);

  // Marks every match of the query in the text under `root`; returns how many.
  function mark(root) {
    if (!query) { return 0; }
    var needle = query.toLowerCase(), n = 0, nodes = [];
    var walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, null);
    while (walk.nextNode()) {
      if (walk.currentNode.parentNode.nodeName !== "MARK") { nodes.push(walk.currentNode); }
    }
    nodes.forEach(function (node) {
      var text = node.nodeValue, lower = text.toLowerCase(), at = lower.indexOf(needle);
      if (at < 0) { return; }
      var frag = document.createDocumentFragment(), from = 0;
      while (at >= 0) {
        frag.appendChild(document.createTextNode(text.slice(from, at)));
        var m = document.createElement("mark");
        m.textContent = text.slice(at, at + needle.length);
        frag.appendChild(m);
        n += 1;
        from = at + needle.length;
        at = lower.indexOf(needle, from);
      }
      frag.appendChild(document.createTextNode(text.slice(from)));
      node.parentNode.replaceChild(frag, node);
    });
    return n;
  }
  function unmark() {
    log.querySelectorAll("mark").forEach(function (m) {
      m.parentNode.replaceChild(document.createTextNode(m.textContent), m);
    });
    log.normalize();
  }
  function count() {
    var n = log.querySelectorAll("mark").length;
    found.textContent = query ? n + (n === 1 ? " match" : " matches") : "";
  }
  search.addEventListener("input", function () {
    query = search.value;
    unmark();
    mark(log);
    count();
    var first = log.querySelector("mark");
    if (first) {
      first.classList.add("current");
      log.scrollTop = first.offsetTop - log.clientHeight / 2;
    }
  });

  if (section.getAttribute("data-live") !== "1") { return; }
  var out = new EventSource(section.getAttribute("data-output"));
  streams.push(out);
  out.addEventListener("chunk", function (ev) {
    var c = JSON.parse(ev.data), frag = document.createDocumentFragment(), lines = 0;
    c.g.forEach(function (seg) {
      var span = document.createElement("span");
      if (seg[0]) { span.className = seg[0]; }
      span.textContent = seg[1];
      lines += (seg[1].match(/\n/g) || []).length;
      if (query) { mark(span); }
      frag.appendChild(span);
    });
    log.appendChild(frag);
    while (log.childNodes.length > MAX_SPANS) { log.removeChild(log.firstChild); }
    if (query) { count(); }
    if (following) {
      log.scrollTop = log.scrollHeight;
    } else {
      unseen += lines;
      fresh.textContent = String(unseen);
      paused.hidden = false;
    }
  });
  out.addEventListener("dropped", function (ev) {
    var d = JSON.parse(ev.data), p = document.createElement("p");
    p.className = "dropped";
    p.textContent = "The oldest " + d.bytes + " bytes were dropped (the session wrote more than its cap).";
    section.insertBefore(p, log);
  });
  out.addEventListener("end", function () { out.close(); });
})();
