// Accuracy of each prompt version over time, from the JSON the page embeds with json_script.
// A static file (no inline script), so the page runs under script-src 'self'. Points carry their
// 95% Wilson interval, shown in the tooltip; a linear time axis needs no date adapter.
(function () {
  "use strict";
  var source = document.getElementById("ev-accuracy-data");
  var canvas = document.getElementById("ev-accuracy-chart");
  if (!source || !canvas || typeof window.Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var palette = ["#2457c5", "#1c7c4a", "#a15c00", "#b3261e", "#6b4fbb", "#00838f", "#5f6b7a", "#c2185b"];
  var day = function (ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); };
  new window.Chart(canvas, {
    type: "line",
    data: {
      datasets: data.series.map(function (s, i) {
        return {
          label: s.name,
          data: s.points.map(function (p) {
            return { x: Date.parse(p.x), y: p.y, low: p.low, high: p.high, run: p.run, route: p.route };
          }),
          borderColor: palette[i % palette.length],
          backgroundColor: palette[i % palette.length],
          tension: 0
        };
      })
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      scales: {
        x: { type: "linear", ticks: { callback: function (v) { return day(v); }, maxRotation: 0 } },
        y: { min: 0, max: 100, ticks: { callback: function (v) { return v + "%"; } } }
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: {
          callbacks: {
            title: function (items) { return day(items[0].raw.x); },
            label: function (item) {
              var p = item.raw;
              return item.dataset.label + ": " + p.y + "% [" + p.low + ", " + p.high + "] run #" + p.run + " on " + p.route;
            }
          }
        }
      }
    }
  });
})();
