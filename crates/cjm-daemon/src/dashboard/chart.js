"use strict";
// The machine over the last minutes: CPU, RAM in use and GPU memory in use, each in
// percent, sampled from GET /api/system and kept in this page only (a reload starts
// afresh). Drawn as three polylines in a fixed 300x100 box: x is time, y is percent.

const CHART_SPAN_S = 300;
const chartSamples = []; // {at, cpu, ram, gpu}: seconds, and percents or null

function percentOf(used, total) {
  return typeof used === "number" && typeof total === "number" && total > 0 ? (100 * used) / total : null;
}

// One sample from /api/system's answer: {cpu: {percent}, memory: {available_mb,
// total_mb}, gpus: [{used_memory_mb, total_memory_mb}]}. A figure it lacks is a gap.
function sampleSystem(system, at) {
  const cpu = system.cpu && typeof system.cpu.percent === "number" ? system.cpu.percent : null;
  const memory = system.memory || {};
  const ram =
    typeof memory.available_mb === "number" ? percentOf(memory.total_mb - memory.available_mb, memory.total_mb) : null;
  const gpus = Array.isArray(system.gpus) ? system.gpus : [];
  const used = gpus.reduce((sum, gpu) => sum + (gpu.used_memory_mb || 0), 0);
  const total = gpus.reduce((sum, gpu) => sum + (gpu.total_memory_mb || 0), 0);
  chartSamples.push({ at, cpu, ram, gpu: percentOf(used, total) });
  while (chartSamples.length && chartSamples[0].at < at - CHART_SPAN_S) chartSamples.shift();
  drawChart(at);
}

function drawChart(now) {
  document.querySelector("#chart-span").textContent = `${CHART_SPAN_S / 60} minutes`;
  for (const series of ["cpu", "ram", "gpu"]) {
    const points = chartSamples
      .filter((sample) => sample[series] !== null)
      .map((sample) => {
        const x = 300 - ((now - sample.at) / CHART_SPAN_S) * 300;
        const y = 100 - Math.min(100, Math.max(0, sample[series]));
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      });
    document.querySelector(`#chart polyline.${series}`).setAttribute("points", points.join(" "));
  }
  const note = chartSamples.length ? `(${chartSamples.length} samples)` : "";
  document.querySelector("#chart-note").textContent = note;
}

// Where the daemon has no /api/system, there is nothing to draw: said so.
function chartUnavailable() {
  document.querySelector("#chart-span").textContent = `${CHART_SPAN_S / 60} minutes`;
  document.querySelector("#chart-note").textContent = "(no /api/system on this daemon: nothing to draw)";
}
