"use strict";
// The dashboard: a snapshot from the API, then the changes from /api/events as they
// come. EventSource reconnects by itself (sending Last-Event-ID); each (re)connection
// takes a fresh snapshot, so that what happened while it was away is shown too.
// Every text from the daemon goes in through textContent, never as markup.

const ENDED = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const jobs = new Map(); // id -> the job as GET /api/jobs/{id} shows it, kept current
const outcomes = new Map(); // id -> {result}, {error} or {note} once the job ended
let systemRoute = null; // "/api/system" when it answers, else health and metrics

function $(selector) {
  return document.querySelector(selector);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function notice(text) {
  $("#notice").textContent = text;
}

// One call to the API: the JSON answer, or an Error with the daemon's own detail.
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let value = text;
  try {
    value = JSON.parse(text);
  } catch (_) {
    // Not JSON (metrics): the text itself.
  }
  if (!response.ok) {
    const detail = value && value.detail ? value.detail : text;
    throw new Error(`${method} ${path}: ${response.status} ${detail}`);
  }
  return value;
}

// Runs `work`, showing its failure in the header instead of leaving it unhandled.
function attempt(work) {
  Promise.resolve()
    .then(work)
    .catch((err) => notice(String(err.message || err)));
}

function bytes(count) {
  if (count === null || count === undefined) return "";
  return `${(count / (1024 * 1024)).toFixed(1)} MiB`;
}

function seconds(total) {
  if (total < 1) return `${Math.round(total * 1000)} ms`;
  if (total < 60) return `${total.toFixed(1)} s`;
  const minutes = Math.floor(total / 60);
  return `${minutes} min ${Math.round(total - minutes * 60)} s`;
}

// --- plugins -------------------------------------------------------------------

const plugins = new Map(); // name -> the plugin as GET /api/plugins shows it

async function refreshPlugins() {
  const answer = await api("GET", "/api/plugins");
  const body = $("#plugins tbody");
  const select = $("#submit select[name=plugin]");
  const chosen = select.value;
  body.replaceChildren();
  select.replaceChildren();
  plugins.clear();
  for (const plugin of answer.plugins) {
    plugins.set(plugin.name, plugin);
    const row = element("tr");
    row.dataset.plugin = plugin.name;
    const state = plugin.loaded ? plugin.state || "loaded" : "unloaded";
    row.append(
      element("td", "name", plugin.name),
      element("td", `state state-${plugin.loaded ? "loaded" : "unloaded"}`, state),
      element("td", "where", plugin.location ?? ""),
      element("td", "pid", plugin.pid ?? ""),
      element("td", "rss", bytes(plugin.rss_bytes)),
      element("td", "gpu", gpu(plugin)),
      element("td", "restarts", plugin.loaded ? String(plugin.restarts ?? 0) : ""),
      element("td", "idle", idleStop(plugin)),
    );
    const cell = element("td", "actions");
    const verbs = plugin.loaded ? ["unload", "reload"] : ["load"];
    for (const verb of verbs) cell.append(pluginButton(plugin, verb));
    row.append(cell);
    body.append(row);
    if (plugin.loaded) {
      select.append(element("option", "", plugin.name));
    }
  }
  if ([...select.options].some((option) => option.value === chosen)) {
    select.value = chosen;
  }
}

// GPU memory its worker holds (where the driver tells), and what it declares it needs.
function gpu(plugin) {
  const resources = plugin.resources || {};
  const need = !resources.requires_gpu ? "" : resources.min_gpu_vram_mb ? `needs ${resources.min_gpu_vram_mb} MiB` : "needs one";
  const held = plugin.gpu_memory_bytes ? `${bytes(plugin.gpu_memory_bytes)} held` : "";
  return [held, need].filter(Boolean).join(", ") || "—";
}

// When an idle worker is stopped: at a time, after an idle spell, or never.
function idleStop(plugin) {
  if (!plugin.loaded) return "";
  if (plugin.idle_stop_at) return `in ${seconds(Math.max(0, plugin.idle_stop_at - Date.now() / 1000))}`;
  if (plugin.keep_alive_s) return `after ${seconds(plugin.keep_alive_s)} idle`;
  return "never";
}

function hasFields(schema) {
  return Boolean(schema && schema.properties && Object.keys(schema.properties).length);
}

// Load (through the config form where the manifest has a config schema), unload,
// reload: each a POST, then the table afresh.
function pluginButton(plugin, verb) {
  const button = element("button", verb, verb[0].toUpperCase() + verb.slice(1));
  button.type = "button";
  button.addEventListener("click", () => {
    if (verb === "load" && hasFields(plugin.config_schema)) {
      openLoadForm(plugin);
      return;
    }
    attempt(() => pluginVerb(button, plugin.name, verb));
  });
  return button;
}

async function pluginVerb(button, name, verb, body) {
  button.disabled = true;
  try {
    await api("POST", `/api/plugins/${encodeURIComponent(name)}/${verb}`, body);
    notice("");
    $("#plugins").dataset.last = `${verb} ${name}: ok`;
  } catch (err) {
    $("#plugins").dataset.last = `${verb} ${name}: failed`;
    throw err;
  } finally {
    button.disabled = false;
    await refreshPlugins();
  }
}

// The config form, one field per property of the plugin's config schema.
function openLoadForm(plugin) {
  const form = $("#load-config");
  form.dataset.plugin = plugin.name;
  form.querySelector(".plugin").textContent = plugin.name;
  form.querySelector(".fields").replaceChildren(...schemaFields(plugin.config_schema));
  form.hidden = false;
}

function schemaFields(schema) {
  return Object.entries(schema.properties).map(([key, property]) => {
    const label = element("label", "", property.title || key);
    let input;
    if (Array.isArray(property.enum)) {
      input = element("select");
      for (const value of property.enum) input.append(element("option", "", String(value)));
    } else {
      input = element("input");
      const type = Array.isArray(property.type) ? property.type.find((t) => t !== "null") : property.type;
      input.type = type === "boolean" ? "checkbox" : type === "integer" || type === "number" ? "number" : "text";
      if (type === "integer") input.step = "1";
      if (property.minimum !== undefined) input.min = String(property.minimum);
      if (property.maximum !== undefined) input.max = String(property.maximum);
    }
    input.name = key;
    input.dataset.type = input.type === "number" ? "number" : input.type === "checkbox" ? "boolean" : "string";
    if (property.default !== undefined) {
      if (input.type === "checkbox") input.checked = Boolean(property.default);
      else input.value = String(property.default);
    }
    if (property.description) label.title = property.description;
    label.append(input);
    return label;
  });
}

// The form's values as a config: left empty is left out (the plugin's default).
function formConfig(form) {
  const config = {};
  for (const input of form.querySelectorAll(".fields [name]")) {
    if (input.dataset.type === "boolean") config[input.name] = input.checked;
    else if (input.value === "") continue;
    else config[input.name] = input.dataset.type === "number" ? Number(input.value) : input.value;
  }
  return config;
}

function loadWithConfig(event) {
  event.preventDefault();
  const form = event.target;
  if (!form.reportValidity()) return;
  const button = form.querySelector("button[type=submit]");
  attempt(async () => {
    await pluginVerb(button, form.dataset.plugin, "load", { config: formConfig(form) });
    form.hidden = true;
  });
}

// --- jobs ----------------------------------------------------------------------

// The row of job `id`, made once and updated in place: a button being pressed is
// never replaced under the pointer.
function jobRow(id) {
  let row = document.getElementById(`job-${id}`);
  if (row) return row;
  row = element("tr");
  row.id = `job-${id}`;
  row.dataset.job = id;
  const progress = element("progress");
  progress.max = 1;
  const progressCell = element("td", "progress");
  progressCell.append(progress);
  // The first press asks the plugin to stop; a second one kills its worker.
  const cancel = element("button", "cancel", "Cancel");
  cancel.type = "button";
  cancel.addEventListener("click", () =>
    attempt(async () => {
      const force = cancel.classList.contains("force");
      cancel.disabled = true;
      try {
        await api("POST", `/api/jobs/${id}/cancel${force ? "?force=true" : ""}`);
      } finally {
        cancel.disabled = false;
      }
      cancel.classList.add("force");
      cancel.textContent = "Force stop";
      cancel.title = "the job was asked to stop; press again to kill its worker";
    }),
  );
  const open = element("button", "open", String(id));
  open.type = "button";
  open.title = "arguments, timeline and log";
  open.addEventListener("click", () => attempt(() => openDetail(id)));
  const idCell = element("td", "id");
  idCell.append(open);
  // A cell cannot be narrowed below its text; a block inside it can (ellipsis).
  const resultCell = element("td", "result");
  resultCell.append(element("div", "clip"));
  const actions = element("td", "actions");
  actions.append(cancel);
  row.append(
    idCell,
    element("td", "plugin"),
    element("td", "state"),
    progressCell,
    element("td", "message"),
    element("td", "category"),
    element("td", "duration"),
    resultCell,
    actions,
  );
  // Newest first.
  $("#jobs tbody").prepend(row);
  return row;
}

function renderJob(job) {
  const row = jobRow(job.id);
  const cell = (name) => row.querySelector(`td.${name}`);
  cell("plugin").textContent = job.plugin;
  cell("state").textContent = job.cancelling && !ENDED.has(job.state) ? `${job.state} (cancelling)` : job.state;
  cell("state").className = `state state-${job.state}`;
  row.dataset.state = job.state;
  const progress = row.querySelector("progress");
  if (job.progress) {
    progress.value = job.progress.fraction;
    cell("message").textContent = job.progress.message || "";
  }
  // Done is done, whatever the plugin reported last; an ended job that never
  // reported is not left "in progress" (a bar without a value moves by itself).
  if (job.state === "succeeded") progress.value = 1;
  else if (ENDED.has(job.state) && !job.progress) progress.value = 0;
  cell("category").textContent = job.failure ? job.failure.category : job.cancelled || "";
  cell("duration").textContent = duration(job);
  const outcome = outcomes.get(job.id);
  const result = cell("result");
  if (outcome) {
    const text = outcome.error || outcome.note || JSON.stringify(outcome.result);
    result.querySelector(".clip").textContent = text;
    result.title = text;
    result.classList.toggle("error", Boolean(outcome.error));
  }
  row.querySelector("button.cancel").hidden = ENDED.has(job.state);
}

function duration(job) {
  if (!job.started_at) return "";
  const end = job.finished_at || Date.now() / 1000;
  return seconds(Math.max(0, end - job.started_at));
}

// The job's whole status, and its result or error once it ended.
async function fetchJob(id) {
  const job = await api("GET", `/api/jobs/${id}`);
  const known = jobs.get(id);
  jobs.set(id, { ...job, cancelling: known && known.cancelling });
  if (ENDED.has(job.state) && !outcomes.has(id)) {
    await fetchOutcome(job);
  }
  renderJob(jobs.get(id));
}

async function fetchOutcome(job) {
  if (job.failure) {
    outcomes.set(job.id, { error: `${job.failure.category}: ${job.failure.message}` });
    return;
  }
  if (job.state !== "succeeded") {
    outcomes.set(job.id, { note: job.cancelled ? `cancelled (${job.cancelled})` : job.state });
    return;
  }
  const waited = await api("GET", `/api/jobs/${job.id}/wait?timeout_ms=0`);
  if (waited.ended) outcomes.set(job.id, { result: waited.result });
}

async function refreshJobs() {
  const answer = await api("GET", "/api/jobs");
  for (const job of answer.jobs) {
    jobs.set(job.id, { ...job, cancelling: (jobs.get(job.id) || {}).cancelling });
  }
  // Results for the jobs that ended while this page was away, newest first.
  const ended = answer.jobs.filter((job) => ENDED.has(job.state) && !outcomes.has(job.id));
  for (const job of ended.slice(-20)) {
    await fetchOutcome(job);
  }
  for (const job of answer.jobs) renderJob(jobs.get(job.id));
}

// One `job` event: {job, plugin, change, ...}.
function onJobEvent(event) {
  const job = jobs.get(event.job) || { id: event.job, plugin: event.plugin, state: "queued" };
  jobs.set(event.job, job);
  switch (event.change) {
    case "progress":
      job.progress = { fraction: event.fraction, message: event.message };
      noteProgress(event.job, event.fraction, event.message);
      renderJob(job);
      return;
    case "cancel":
      job.cancelling = event.phase !== "completed";
      renderJob(job);
      return;
    case "state":
      job.state = event.state;
      renderJob(job);
      // The times, the failure, the result: from the job itself.
      attempt(() => fetchJob(event.job));
      if (detail && detail.id === event.job) attempt(refreshDetail);
      return;
    default:
      renderJob(job);
  }
}

// --- system --------------------------------------------------------------------

function figures(list, value, prefix) {
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((item, index) => [index, item]) : Object.entries(value);
    for (const [key, inner] of entries) figures(list, inner, prefix ? `${prefix}.${key}` : String(key));
  } else {
    list.push([prefix, value === null ? "—" : String(value)]);
  }
}

async function refreshSystem() {
  let shown;
  if (systemRoute !== "health") {
    const response = await fetch("/api/system");
    if (response.ok) {
      systemRoute = "/api/system";
      shown = await response.json();
      sampleSystem(shown, Date.now() / 1000);
    } else {
      // Not served by this daemon: health and metrics instead, from now on.
      systemRoute = "health";
    }
  }
  $("#system-source").textContent =
    systemRoute === "health" ? "from /api/health and /metrics (no /api/system here)" : "from /api/system";
  if (systemRoute === "health") {
    chartUnavailable();
    shown = await api("GET", "/api/health");
    const metrics = await api("GET", "/metrics");
    const samples = String(metrics)
      .split("\n")
      .filter((line) => line && !line.startsWith("#") && !/_(bucket|created)[{ ]/.test(line));
    $("#metrics").textContent = samples.join("\n");
    $("#metrics-box").hidden = false;
  }
  const list = [];
  figures(list, shown, "");
  const dl = $("#system");
  dl.replaceChildren();
  for (const [key, value] of list) dl.append(element("dt", "", key), element("dd", "", value));
}

// --- wiring --------------------------------------------------------------------

function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const output = $("#submitted");
  attempt(async () => {
    let kwargs;
    try {
      kwargs = JSON.parse(form.kwargs.value || "{}");
    } catch (err) {
      output.textContent = `kwargs: not JSON (${err.message})`;
      return;
    }
    if (kwargs === null || typeof kwargs !== "object" || Array.isArray(kwargs)) {
      output.textContent = "kwargs: expected a JSON object";
      return;
    }
    try {
      const answer = await api("POST", "/api/jobs", { plugin: form.plugin.value, kwargs });
      submittedArgs.set(answer.id, { plugin: form.plugin.value, kwargs });
      output.textContent = `job ${answer.id} submitted`;
      await fetchJob(answer.id);
    } catch (err) {
      output.textContent = err.message;
    }
  });
}

function refreshAll() {
  attempt(refreshPlugins);
  attempt(refreshJobs);
  attempt(refreshSystem);
}

function connect() {
  const source = new EventSource("/api/events");
  const connection = $("#connection");
  source.addEventListener("open", () => {
    connection.textContent = "live";
    connection.className = "up";
    notice("");
    refreshAll();
  });
  source.addEventListener("error", () => {
    connection.className = "down";
    if (source.readyState !== EventSource.CLOSED) {
      connection.textContent = "reconnecting…";
      return;
    }
    // Refused outright (an error status, a session gone): EventSource gives up on
    // those, so a new one is made; the snapshot at its opening fills the gap.
    connection.textContent = "disconnected";
    setTimeout(connect, 5000);
  });
  source.addEventListener("job", (message) => onJobEvent(JSON.parse(message.data)));
  source.addEventListener("plugin", () => attempt(refreshPlugins));
  // Events were lost (a slow page, or a daemon restarted): the snapshot again.
  source.addEventListener("lagged", () => refreshAll());
}

document.addEventListener("DOMContentLoaded", () => {
  $("#submit").addEventListener("submit", submitJob);
  $("#load-config").addEventListener("submit", loadWithConfig);
  $("#load-config .dismiss").addEventListener("click", () => ($("#load-config").hidden = true));
  $("#detail .dismiss").addEventListener("click", closeDetail);
  connect();
  // RSS, idle stops, system figures, running durations and log lines change
  // without events.
  setInterval(() => attempt(refreshPlugins), 5000);
  setInterval(() => attempt(refreshSystem), 3000);
  setInterval(() => {
    if (detail && !ENDED.has((jobs.get(detail.id) || {}).state)) attempt(refreshDetail);
  }, 2000);
  setInterval(() => {
    for (const job of jobs.values()) if (job.state === "running") renderJob(job);
  }, 1000);
});
