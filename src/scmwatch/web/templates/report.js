// Optional: filter the alert list by level. The page is complete without it.
(function () {
  var box = document.getElementById("filter");
  if (!box) { return; }
  box.className = "on";
  var inputs = box.querySelectorAll("input[data-level]");
  function apply() {
    var show = {};
    inputs.forEach(function (i) { show[i.getAttribute("data-level")] = i.checked; });
    document.querySelectorAll("article.alert").forEach(function (a) {
      a.classList.toggle("hidden", show[a.getAttribute("data-level")] === false);
    });
  }
  inputs.forEach(function (i) { i.addEventListener("change", apply); });
})();
