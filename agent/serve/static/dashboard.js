// The dashboard's logic: poll /api/*, render with DOM text nodes only (episodes hold model output).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "selfevolve-api-key";
let selected = null;

(function keyFromHash() {
  const m = location.hash.match(/key=([^&]+)/);
  if (m) { sessionStorage.setItem(KEY, decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname); }
})();

class Unauthorized extends Error {}

async function api(path) {
  const key = sessionStorage.getItem(KEY);
  const res = await fetch(path, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
  if (res.status === 401) { $("auth").classList.remove("hidden"); throw new Unauthorized("API key needed"); }
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

const pct = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%");
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "–");
const verdict = (ok) => el("span", { class: ok ? "ok" : "bad" }, ok ? "✓ success" : "✗ failure");

function table(head, rows) {
  const t = el("table", {}, el("tr", {}, ...head.map((h) => el("th", {}, h))));
  for (const r of rows) t.append(el("tr", {}, ...r.map((c) => el("td", {}, c))));
  return t;
}

function tile(value, label) { return el("div", { class: "tile" }, el("div", { class: "v" }, value), el("div", { class: "k" }, label)); }

function renderSummary(s) {
  $("serving").textContent = s.serving_version;
  $("model").textContent = `(${s.model}; loaded: ${s.policy_version})`;
  const envs = Object.entries(s.envs);
  const n = envs.reduce((a, [, r]) => a + r.episodes, 0);
  const acc = (k) => (n ? envs.reduce((a, [, r]) => a + r[k], 0) / n : null);
  const sv = s.served;
  $("tiles").replaceChildren(
    tile(String(s.episodes), "episodes in the library"),
    tile(pct(acc("first_successes")), "first-try success (all episodes)"),
    tile(pct(acc("successes")), "final success (all episodes)"),
    tile(String(sv.served), "completions served"),
    tile(`${sv.rated}`, "rated by users"),
    tile(sv.rated ? pct(sv.successes / sv.rated) : "–", "rated successes"),
  );
  $("envs").replaceChildren(table(["env", "episodes", "first try", "final", "recovered"],
    envs.map(([env, r]) => [env, r.episodes, pct(r.first_try_accuracy), pct(r.final_accuracy), r.recovered])));
  $("served").replaceChildren(
    el("p", {}, `${sv.served} served, ${sv.rated} rated: `, el("span", { class: "ok" }, `${sv.successes} good`), ", ",
       el("span", { class: "bad" }, `${sv.failures} bad`), ` — last served ${when(sv.last_served_at)}, last rated ${when(sv.last_rated_at)}`),
    sv.groups.length ? table(["version", "env", "served", "rated", "good", "bad"],
      sv.groups.map((g) => [g.version, g.env, g.served, g.rated, g.successes, g.failures])) : el("p", { class: "muted" }, "nothing served yet"));
  fillSelect($("f-env"), envs.map(([env]) => env), "any env");
  fillSelect($("f-version"), s.versions.map((v) => v.id), "any version");
}

function fillSelect(select, values, anyLabel) {
  const current = select.value;
  const have = [...select.options].map((o) => o.value).slice(1);
  if (have.join("\n") === values.join("\n")) return;
  select.replaceChildren(el("option", { value: "" }, anyLabel), ...values.map((v) => el("option", { value: v }, v)));
  select.value = values.includes(current) ? current : "";
}

function renderCurves(data) {
  const box = $("curves");
  if (!data.curves.length) {
    box.replaceChildren(el("p", { class: "muted" }, "no held-out evaluations yet: run `selfevolve eval --model <version> --env ENV` " +
      "or the daemon (its gate scores every candidate)"));
    return;
  }
  box.replaceChildren(...data.curves.map((c) => window.drawCurve(c)));
}

function budgetRow(name, [used, limit]) {
  const frac = limit ? Math.min(1, used / limit) : 0;
  const bar = el("span", { class: "bar" }, el("i", { style: `width:${(100 * frac).toFixed(0)}%` }));
  return [name.replace(/_/g, " "), el("span", {}, limit ? bar : "", `${used} / ${limit ?? "∞"}`)];
}

function renderDaemon(d) {
  const box = $("daemon");
  if (!d.present) {
    box.replaceChildren(el("p", { class: "muted" }, "no daemon has run in this workspace (start one with `selfevolve daemon --config FILE`)"));
    return;
  }
  const g = d.last_gate;
  const rows = [
    ["status", el("span", { class: d.running ? "ok" : "bad" }, d.status + (d.stop_reason ? ` (${d.stop_reason})` : ""))],
    ["cycle", `${d.cycles_completed ?? 0} completed` + (d.phase ? `; cycle ${d.cycle} in ${d.phase}` : "")],
    ["serving version", d.serving_version],
    ["last gate", g ? el("span", {}, el("b", { class: g.promote ? "ok" : "bad" }, g.promote ? "PROMOTED " : "kept current "),
      `${g.candidate} vs ${g.current}: ${g.reason}`) : "–"],
    ["tripwires", d.training_halted ? el("span", { class: "bad" }, `tripped: ${d.training_halted}`) :
      (g && g.tripwire ? el("span", { class: "bad" }, g.tripwire) : el("span", { class: "ok" }, "none tripped"))],
  ];
  if (d.training_refused) rows.push(["training refused", el("span", { class: "bad" }, d.training_refused)]);
  if (d.last_training) rows.push(["last training", `${d.last_training.version} (${d.last_training.method}, ${d.last_training.steps} steps)`]);
  for (const [k, v] of Object.entries(d.budget || {})) rows.push(budgetRow(`budget: ${k}`, v));
  if (d.monitors) rows.push(["monitors", Object.entries(d.monitors).map(([k, v]) => `${k}=${typeof v === "number" ? v.toFixed(3) : v}`).join("  ")]);
  rows.push(["updated", when(d.updated)]);
  box.replaceChildren(table(["", ""], rows));
}

async function search(ev) {
  if (ev) ev.preventDefault();
  const p = new URLSearchParams({ q: $("q").value, env: $("f-env").value, success: $("f-success").value,
                                  version: $("f-version").value, limit: "50" });
  const box = $("episodes");
  try {
    const data = await api(`/api/episodes?${p}`);
    const head = el("p", { class: "muted" }, data.mode === "search" ? `${data.episodes.length} most similar to “${data.query}”`
      : `newest ${data.episodes.length} of ${data.total}`);
    box.replaceChildren(head, ...data.episodes.map(episodeRow));
  } catch (e) { if (!(e instanceof Unauthorized)) box.replaceChildren(el("p", { class: "bad" }, e.message)); }
}

function episodeRow(r) {
  const row = el("div", { class: "episode-row", "data-id": r.id, onclick: () => openEpisode(r.id, row) },
    el("div", { class: "q" }, r.question),
    el("div", { class: "muted" }, verdict(r.success), ` · ${r.env} · ${r.model_version} · ${r.attempts} attempt(s) · ${r.feedback_source}`,
       r.score !== null ? ` · score ${r.score.toFixed(2)}` : "", ` · ${when(r.created_at)}`));
  return row;
}

function messages(msgs) {
  return el("details", {}, el("summary", {}, `prompt (${msgs.length} messages)`),
    ...msgs.map((m) => el("div", {}, el("span", { class: "muted" }, m.role), el("pre", {}, m.content))));
}

function call(label, c) {
  if (!c) return null;
  return el("div", { class: `step step-${label}` }, el("div", { class: "label" }, label + ` · ${c.model_version} · ${c.completion_tokens} tokens`),
    messages(c.messages), el("pre", {}, c.output));
}

function attempt(a) {
  const fb = a.feedback;
  return el("div", { class: `attempt ${fb.success ? "ok" : "bad"}` },
    el("b", {}, a.index === 0 ? "Attempt 1 (solve)" : `Attempt ${a.index + 1} (retry)`),
    call(a.index === 0 ? "solve" : "retry", a.solve),
    el("div", { class: "step" }, el("div", { class: "label" }, "answer"), el("pre", {}, a.answer ?? "(none extracted)")),
    call("critique", a.critique),
    a.critique_verdict !== null ? el("div", { class: "muted" }, `self-critique verdict: ${a.critique_verdict ? "thinks it is right" : "thinks it is wrong"}`) : null,
    el("div", { class: "step step-feedback" }, el("div", { class: "label" }, "feedback"), verdict(fb.success),
       ` reward ${fb.reward}`, el("pre", {}, fb.message)),
    a.ground_truth ? el("div", { class: "muted" }, `hidden verifier: ${a.ground_truth.success ? "success" : "failure"}`) : null,
    call("reflection", a.reflect));
}

async function openEpisode(id, row) {
  selected = id;
  document.querySelectorAll(".episode-row.sel").forEach((r) => r.classList.remove("sel"));
  if (row) row.classList.add("sel");
  const box = $("episode");
  try {
    const ep = await api(`/api/episodes/${encodeURIComponent(id)}`);
    box.replaceChildren(...[
      el("h3", {}, ep.task.question),
      el("p", { class: "muted" }, verdict(ep.success), ` · ${ep.env} · version ${ep.model_version} · feedback from ${ep.feedback_source}` +
        ` · ${ep.tokens} tokens · ${when(ep.created_at)} · ${ep.id}`),
      ep.metadata && ep.metadata.comment ? el("p", {}, "user comment: ", el("q", {}, ep.metadata.comment)) : null,
      ep.retrieved_ids.length ? el("p", { class: "muted" }, `retrieved experiences: ${ep.retrieved_ids.join(", ")}`) : null,
      ep.error ? el("p", { class: "bad" }, `error: ${ep.error}`) : null,
      ...ep.attempts.map(attempt)].filter((x) => x !== null));
  } catch (e) { if (!(e instanceof Unauthorized)) box.replaceChildren(el("p", { class: "bad" }, e.message)); }
}

async function refresh() {
  const live = $("live");
  try {
    const [s, d] = await Promise.all([api("/api/summary"), api("/api/daemon")]);
    renderSummary(s); renderDaemon(d);
    live.textContent = `live · ${new Date().toLocaleTimeString()}`; live.className = "pill ok";
    $("auth").classList.add("hidden");
  } catch (e) {
    live.textContent = e instanceof Unauthorized ? "API key needed" : `offline: ${e.message}`; live.className = "pill bad";
    throw e;
  }
}

async function refreshCurves() { renderCurves(await api("/api/curves")); }

async function start() {
  try { await refresh(); await refreshCurves(); await search(); } catch (e) { /* shown in the live pill */ }
}

$("search-form").addEventListener("submit", search);
$("auth").addEventListener("submit", (ev) => { ev.preventDefault(); sessionStorage.setItem(KEY, $("key").value); start(); });
setInterval(() => refresh().catch(() => {}), 5000);
setInterval(() => refreshCurves().catch(() => {}), 30000);
start();
