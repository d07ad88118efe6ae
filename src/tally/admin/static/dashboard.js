// Draws the dashboard's charts from the JSON in #dashboard-data (Chart.js, vendored).
(function () {
  "use strict";
  var source = document.getElementById("dashboard-data");
  if (!source || !window.Chart) {
    return;
  }
  var data = JSON.parse(source.textContent);
  var colors = {
    issued: "#2f7d4f",
    redeemed: "#3b5bdb",
    expired: "#c2410c",
    tiers: ["#94a3b8", "#a16207", "#64748b", "#ca8a04", "#7c3aed", "#0f766e", "#be185d"]
  };
  window.Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  window.Chart.defaults.animation = false;

  var points = document.getElementById("points-chart");
  if (points) {
    new window.Chart(points, {
      type: "bar",
      data: {
        labels: data.days.map(function (day) { return day.slice(5); }),
        datasets: [
          { label: "Issued", data: data.issued, backgroundColor: colors.issued },
          { label: "Redeemed", data: data.redeemed, backgroundColor: colors.redeemed },
          { label: "Expired", data: data.expired, backgroundColor: colors.expired }
        ]
      },
      options: {
        maintainAspectRatio: false,
        responsive: true,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: "bottom" } }
      }
    });
  }

  var tiers = document.getElementById("tiers-chart");
  if (tiers) {
    new window.Chart(tiers, {
      type: "doughnut",
      data: {
        labels: data.tiers.labels,
        datasets: [{ data: data.tiers.counts, backgroundColor: colors.tiers }]
      },
      options: {
        maintainAspectRatio: false,
        responsive: true,
        plugins: { legend: { position: "right" } }
      }
    });
  }
})();
