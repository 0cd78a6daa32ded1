// The lateral-movement page's time slider and host highlighting. The page is complete without it.
// Reads numbers and names from data- attributes, writes only textContent and classes.
(function () {
  "use strict";
  var box = document.getElementById("timeslider");
  var slider = document.getElementById("slider");
  if (!box || !slider) { return; }
  var edges = Array.prototype.slice.call(document.querySelectorAll("a.edge-link"));
  var rows = Array.prototype.slice.call(document.querySelectorAll("#edge-list tr[data-first]"));
  var when = document.getElementById("slider-time");
  var count = document.getElementById("slider-count");
  function stamp(ms) { return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }
  function apply() {
    var until = Number(slider.value) * 1000;
    var shown = 0;
    edges.forEach(function (e) {
      var later = Number(e.getAttribute("data-first")) > until;
      e.classList.toggle("later", later);
      if (!later) { shown += 1; }
    });
    rows.forEach(function (r) { r.classList.toggle("later", Number(r.getAttribute("data-first")) > until); });
    when.textContent = stamp(until);
    count.textContent = shown + " of " + edges.length + " links drawn";
  }
  function highlight(host, on) {
    edges.forEach(function (e) {
      var touches = e.getAttribute("data-source") === host || e.getAttribute("data-target") === host;
      e.classList.toggle("focus", on && touches);
      e.classList.toggle("dim", on && !touches);
    });
  }
  document.querySelectorAll("a.node").forEach(function (n) {
    var host = n.getAttribute("data-host");
    n.addEventListener("mouseenter", function () { highlight(host, true); });
    n.addEventListener("mouseleave", function () { highlight(host, false); });
  });
  slider.addEventListener("input", apply);
  box.hidden = false;
  apply();
})();
