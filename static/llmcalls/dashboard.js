// Draws the cost-per-feature-per-day chart from the JSON that the page embeds with json_script.
// A static file (no inline script), so the page runs under script-src 'self'.
(function () {
  "use strict";
  var source = document.getElementById("llm-cost-data");
  var canvas = document.getElementById("llm-cost-chart");
  if (!source || !canvas || typeof window.Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var palette = ["#2457c5", "#1c7c4a", "#a15c00", "#b3261e", "#6b4fbb", "#00838f", "#5f6b7a", "#c2185b"];
  new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: data.labels,
      datasets: data.series.map(function (s, i) {
        return { label: s.feature, data: s.costs, backgroundColor: palette[i % palette.length] };
      })
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { stacked: true },
        y: { stacked: true, beginAtZero: true, ticks: { callback: function (v) { return "$" + v; } } }
      },
      plugins: { legend: { position: "bottom" } }
    }
  });
})();
