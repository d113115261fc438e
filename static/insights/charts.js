// Insights charts, from the JSON the page embeds with json_script. A static file (no inline
// script), so the page runs under script-src 'self'. Chart.js is vendored (static/vendor/chartjs).
(function () {
  "use strict";
  var source = document.getElementById("insights-data");
  if (!source || typeof window.Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  var pct = function (v) { return v === null || v === undefined ? null : Math.round(v * 1000) / 10; };
  var stamp = function (ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); };

  // Vertical dashed lines where a model or prompt version was first seen.
  var changeLines = {
    id: "versionChanges",
    afterDatasetsDraw: function (chart) {
      var x = chart.scales.x, area = chart.chartArea, ctx = chart.ctx;
      (data.changes || []).forEach(function (c) {
        var px = x.getPixelForValue(Date.parse(c.at));
        if (px < area.left || px > area.right) return;
        ctx.save();
        ctx.strokeStyle = "#a15c00";
        ctx.setLineDash([5, 4]);
        ctx.beginPath(); ctx.moveTo(px, area.top); ctx.lineTo(px, area.bottom); ctx.stroke();
        ctx.fillStyle = "#a15c00";
        ctx.font = "11px system-ui, sans-serif";
        ctx.fillText((c.model || "?") + " · " + (c.prompt || "?"), px + 4, area.bottom - 6);
        ctx.restore();
      });
    }
  };

  var agreement = document.getElementById("agreement-chart");
  if (agreement) {
    var points = data.series.map(function (p) {
      return { x: Date.parse(p.at), y: pct(p.rate), low: pct(p.low), high: pct(p.high), n: p.n };
    });
    var bound = function (key) {
      return points.map(function (p) { return { x: p.x, y: p.n ? p[key] : null }; });
    };
    new window.Chart(agreement, {
      type: "line",
      data: {
        datasets: [
          { label: "95% interval (high)", data: bound("high"), borderWidth: 0, pointRadius: 0,
            backgroundColor: "rgba(36,87,197,0.15)", fill: "+1" },
          { label: "95% interval (low)", data: bound("low"), borderWidth: 0, pointRadius: 0,
            backgroundColor: "rgba(36,87,197,0.15)", fill: false },
          { label: "Agreement", data: points, borderColor: "#2457c5", backgroundColor: "#2457c5",
            spanGaps: false, tension: 0 }
        ]
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        parsing: false,
        scales: {
          x: { type: "linear", ticks: { callback: function (v) { return stamp(v); }, maxRotation: 0, maxTicksLimit: 6 } },
          y: { min: 0, max: 100, ticks: { callback: function (v) { return v + "%"; } } }
        },
        plugins: {
          legend: { position: "bottom", labels: { filter: function (item) { return item.datasetIndex === 2; } } },
          tooltip: {
            filter: function (item) { return item.datasetIndex === 2; },
            callbacks: {
              title: function (items) { return stamp(items[0].raw.x); },
              label: function (item) {
                var p = item.raw;
                return "Agreement " + p.y + "% [" + p.low + ", " + p.high + "] of " + p.n;
              }
            }
          }
        }
      },
      plugins: [changeLines]
    });
  }

  var calibration = document.getElementById("calibration-chart");
  if (calibration) {
    var bands = data.calibration.filter(function (b) { return b.n > 0; });
    new window.Chart(calibration, {
      type: "scatter",
      data: {
        datasets: [
          { label: "Reviewers agreed", data: bands.map(function (b) {
              return { x: pct(b.confidence), y: pct(b.agreement), n: b.n, band: b.label };
            }), borderColor: "#1c7c4a", backgroundColor: "#1c7c4a", showLine: true, pointRadius: 4 },
          { label: "Perfect calibration", data: [{ x: 0, y: 0 }, { x: 100, y: 100 }],
            borderColor: "#9aa3ad", borderDash: [4, 4], showLine: true, pointRadius: 0 }
        ]
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: {
          x: { min: 0, max: 100, title: { display: true, text: "stated confidence %" } },
          y: { min: 0, max: 100, title: { display: true, text: "agreement %" } }
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: function (item) {
            var p = item.raw;
            return p.band ? p.band + ": " + p.y + "% agreed of " + p.n + " (stated " + p.x + "%)" : "";
          } } }
        }
      }
    });
  }
})();
