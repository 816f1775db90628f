// jitgate web UI: countdowns, and pages that refresh when state changes.
// Everything works without this file; it only saves reloading by hand.
(function () {
  "use strict";
  function fmt(s) {
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + x + "s";
  }
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-expires]").forEach(function (el) {
      var left = Math.floor(Number(el.getAttribute("data-expires")) - now);
      el.textContent = left > 0 ? fmt(left) + " left" : "ended";
    });
  }
  tick();
  setInterval(tick, 1000);

  // Reload on change, but never under someone's fingers, and never once a
  // form is on its way (a reload would cancel its navigation).
  var pending = false, leaving = false;
  document.addEventListener("submit", function () { leaving = true; });
  function typing() {
    var a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "TEXTAREA") && a.value !== "";
  }
  function reload() {
    if (leaving) { return; }
    if (typing()) { pending = true; return; }
    window.location.reload();
  }
  document.addEventListener("focusout", function () {
    if (pending) { setTimeout(reload, 200); }
  });
  if (window.EventSource && document.body.getAttribute("data-live") === "1") {
    var first = true;
    var events = new EventSource("/ui/events");
    events.addEventListener("changed", function () {
      if (first) { first = false; return; } // the current version, on connect
      reload();
    });
  }
})();
