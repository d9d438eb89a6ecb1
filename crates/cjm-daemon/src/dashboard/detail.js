"use strict";
// A job's detail: its arguments, its timeline and its worker's log lines.
// The times come from the job record (GET /api/jobs/{id}); the progress steps between
// are those this page saw on the event stream (a few, not every report); the log is
// GET /api/jobs/{id}/diagnostics, read on from the last record shown.

const submittedArgs = new Map(); // id -> {args, kwargs} for the jobs this page submitted
const progressSeen = new Map(); // id -> [{at, fraction, message}], a tenth apart
let detail = null; // {id, lastSeq} of the job shown

function noteProgress(id, fraction, message) {
  const seen = progressSeen.get(id) || [];
  const last = seen[seen.length - 1];
  // The first report, then one per tenth of the way (or per change of sign, for a
  // job that cannot tell how far it is).
  const step = (value) => (value < 0 ? -1 : Math.floor(value * 10));
  if (!last || step(fraction) !== step(last.fraction)) {
    seen.push({ at: Date.now() / 1000, fraction, message });
    progressSeen.set(id, seen);
    if (detail && detail.id === id) renderTimeline(jobs.get(id));
  }
}

function clock(at) {
  const time = new Date(at * 1000);
  return `${time.toLocaleTimeString("en-GB")}.${String(time.getMilliseconds()).padStart(3, "0")}`;
}

function renderTimeline(job) {
  const list = document.querySelector("#detail .timeline");
  if (!job || !job.submitted_at) return;
  const steps = [["submitted", job.submitted_at, `priority ${job.priority ?? 0}`]];
  if (job.admitted_at) steps.push(["admitted", job.admitted_at, "its turn came"]);
  if (job.started_at) steps.push(["started", job.started_at, `sent to the worker (attempt ${job.attempts || 1})`]);
  for (const seen of progressSeen.get(job.id) || []) {
    const how = seen.fraction < 0 ? "" : `${Math.round(seen.fraction * 100)} % `;
    steps.push(["progress", seen.at, `${how}${seen.message || ""} (seen by this page)`]);
  }
  // The page's clock for progress, the daemon's for the rest: sorted, but the end
  // stays last even where an event reached the page after the job had ended.
  steps.sort((a, b) => a[1] - b[1]);
  if (job.finished_at) {
    const why = job.failure ? `${job.failure.category}: ${job.failure.message}` : job.cancelled || "";
    steps.push([job.state, job.finished_at, why]);
  }
  list.replaceChildren(
    ...steps.map(([what, at, text]) => {
      const item = element("li", `step step-${what}`);
      const time = element("time", "", clock(at));
      time.dateTime = new Date(at * 1000).toISOString();
      item.append(time, element("strong", "", what), document.createTextNode(` +${seconds(at - job.submitted_at)} ${text}`));
      return item;
    }),
  );
}

async function openDetail(id) {
  const box = document.querySelector("#detail");
  detail = { id, lastSeq: null };
  box.hidden = false;
  box.dataset.job = id;
  box.querySelector(".id").textContent = String(id);
  box.querySelector(".log").textContent = "";
  box.querySelector(".timeline").replaceChildren();
  const given = submittedArgs.get(id);
  box.querySelector(".arguments").textContent = given
    ? JSON.stringify(given, null, 2)
    : "(not kept: the daemon keeps those of its latest 1000 jobs)";
  await refreshDetail();
  box.scrollIntoView({ block: "nearest" });
}

// The record's times, and the log lines written since the last look.
async function refreshDetail() {
  if (!detail) return;
  const shown = detail;
  const job = await api("GET", `/api/jobs/${shown.id}`);
  if (detail !== shown) return;
  jobs.set(job.id, { ...(jobs.get(job.id) || {}), ...job });
  const box = document.querySelector("#detail");
  box.querySelector(".plugin").textContent = `${job.plugin}, ${job.state}`;
  if (job.arguments) {
    // As the daemon kept them, whoever submitted the job.
    const asked = { plugin: job.plugin, ...job.arguments };
    if (!asked.task) delete asked.task;
    box.querySelector(".arguments").textContent = JSON.stringify(asked, null, 2);
  }
  box.dataset.state = job.state;
  renderTimeline(jobs.get(job.id));
  const after = shown.lastSeq === null ? "" : `&after_seq=${shown.lastSeq}`;
  const read = await api("GET", `/api/jobs/${shown.id}/diagnostics?limit=500${after}`);
  if (detail !== shown) return;
  const log = box.querySelector(".log");
  for (const record of read.records) {
    log.append(`${record.ts} ${record.level} ${record.message}\n`);
  }
  if (read.last_seq !== null && read.last_seq !== undefined) shown.lastSeq = read.last_seq;
  const dropped = read.dropped ? `, ${read.dropped} dropped by the store's bounds` : "";
  box.querySelector(".log-note").textContent = `${log.textContent.split("\n").length - 1} lines${dropped}`;
}

function closeDetail() {
  detail = null;
  document.querySelector("#detail").hidden = true;
}
