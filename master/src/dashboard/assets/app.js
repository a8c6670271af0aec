// CloudOS dashboard: the only script. Pages are rendered by the master; this file sends
// the changes they offer to the same JSON API the CLI uses (with the session's CSRF
// token), follows a task's logs, copies tokens, and refreshes pages that ask for it.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { "content-type": "application/json", "x-cloudos-csrf": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    throw new Error(json?.message ?? `${response.status} ${text}`);
  }
  return json;
}

function say(message, isError) {
  const out = document.getElementById("status");
  if (out) {
    out.textContent = message;
    out.className = isError ? "error" : "muted";
  }
}

// Buttons with data-method and data-path: a change, then the page again.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-path]");
  if (!button) return;
  event.preventDefault();
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  try {
    const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
    await api(button.dataset.method ?? "POST", button.dataset.path, body);
    window.location.reload();
  } catch (e) {
    say(e.message, true);
  }
});

// Forms with data-api: their fields become the request's JSON.
const builders = {
  task: (f) => ({ spec: { image: f.image.value.trim(), command: words(f.command.value) } }),
  scale: (f) => ({ replicas: Number(f.replicas.value) }),
  token: (f) => ({ role: f.role.value, ttl: f.ttl.value || null, uses: f.uses.value ? Number(f.uses.value) : null }),
  user: (f) => ({ name: f.name.value.trim(), role: f.role.value }),
  role: (f) => ({ role: f.role.value }),
  apikey: (f) => ({ name: f.name.value.trim(), role: f.role.value, ttl: f.ttl.value }),
};

function words(text) {
  return text.trim() === "" ? [] : text.trim().split(/\s+/);
}

document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form[data-api]");
  if (!form) return;
  event.preventDefault();
  try {
    const answer = await api(form.dataset.method ?? "POST", form.dataset.path, builders[form.dataset.api](form));
    if (form.dataset.then === "task" && answer?.id) {
      window.location.href = `/ui/tasks/${encodeURIComponent(answer.id)}`;
    } else if (form.dataset.then === "secret") {
      const shown = document.getElementById("secret");
      shown.hidden = false;
      shown.querySelector("code").textContent = answer.token ?? answer.key;
    } else {
      window.location.reload();
    }
  } catch (e) {
    say(e.message, true);
  }
});

// Copy buttons: data-copy names the element whose text to copy.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy)?.textContent ?? "";
  try {
    await navigator.clipboard.writeText(text);
    say("copied", false);
  } catch (_) {
    say("select the text and copy it", true);
  }
});

// A task's logs, followed while it runs.
async function followLogs(pre) {
  const response = await fetch(`/v1/tasks/${encodeURIComponent(pre.dataset.task)}/logs?follow=true`, {
    credentials: "same-origin",
  });
  if (!response.ok || !response.body) {
    say(`logs: ${response.status}`, true);
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = JSON.parse(pending.slice(0, newline));
      pending = pending.slice(newline + 1);
      const span = document.createElement("span");
      span.className = line.stream;
      span.textContent = line.data;
      pre.appendChild(span);
      pre.scrollTop = pre.scrollHeight;
    }
  }
  pre.dataset.ended = "true";
}

const logs = document.querySelector("pre.logs[data-task]");
if (logs) followLogs(logs);

// Pages that show live state ask to be read again now and then (not while typing).
const refresh = document.querySelector("main[data-refresh]");
if (refresh) {
  setInterval(() => {
    if (!document.activeElement || !["INPUT", "SELECT"].includes(document.activeElement.tagName)) {
      window.location.reload();
    }
  }, Number(refresh.dataset.refresh) * 1000);
}
