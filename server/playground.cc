// The playground page (playground.h). Element ids are what tests/server/playground_test.py
// drives: #task, #source, #translate, #output, #status.
#include "server/playground.h"

namespace taskmoe::server {

absl::string_view PlaygroundPage() {
  static constexpr char kPage[] = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>taskmoe-serve playground</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem;
         color: #1d232a; background: #fafbfc; }
  h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
  p.lead { margin-top: 0; color: #57606a; }
  .row { display: flex; gap: 0.75rem; align-items: center; margin: 0.75rem 0; }
  select, button { font-size: 1rem; padding: 0.35rem 0.6rem; }
  textarea { width: 100%; box-sizing: border-box; font-size: 1rem; padding: 0.5rem; min-height: 6rem; }
  #output { white-space: pre-wrap; min-height: 4rem; padding: 0.6rem; border: 1px solid #d0d7de;
            border-radius: 6px; background: #fff; font-size: 1.05rem; }
  #status { color: #57606a; font-size: 0.9rem; min-height: 1.2rem; }
  #status.error { color: #b42318; }
</style>
</head>
<body>
<h1>taskmoe-serve playground</h1>
<p class="lead">Pick a language pair, type, translate: tokens appear as the server decodes them.</p>
<div class="row">
  <label for="task">Task</label>
  <select id="task" disabled><option>loading tasks...</option></select>
  <button id="translate" disabled>Translate</button>
</div>
<textarea id="source" placeholder="Text to translate">Open the file. Save the document as PDF.</textarea>
<h2 style="font-size:1rem">Translation</h2>
<div id="output" aria-live="polite"></div>
<p id="status"></p>
<script>
"use strict";
const taskSelect = document.getElementById("task");
const source = document.getElementById("source");
const button = document.getElementById("translate");
const output = document.getElementById("output");
const statusLine = document.getElementById("status");

function showStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

async function loadTasks() {
  try {
    const reply = await fetch("/v1/tasks");
    const body = await reply.json();
    if (!reply.ok) throw new Error(body.error ? body.error.message : reply.statusText);
    taskSelect.textContent = "";
    for (const task of body.tasks) {
      const option = document.createElement("option");
      option.value = task.task;
      option.textContent = task.ready ? task.task : task.task + " (not ready)";
      option.disabled = !task.ready;
      taskSelect.appendChild(option);
    }
    taskSelect.disabled = false;
    button.disabled = false;
    showStatus(body.tasks.length + " tasks", false);
  } catch (error) {
    showStatus("could not list tasks: " + error.message, true);
  }
}

async function translate() {
  button.disabled = true;
  output.textContent = "";
  showStatus("translating...", false);
  const started = performance.now();
  let firstToken = null;
  try {
    const reply = await fetch("/v1/translate:stream", {
      method: "POST",
      headers: {"Content-Type": "application/json", "x-taskmoe-task": taskSelect.value},
      body: JSON.stringify({task: taskSelect.value, text: source.value}),
    });
    if (!reply.ok) {
      const body = await reply.json();
      throw new Error(body.error.code + ": " + body.error.message);
    }
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      pending += decoder.decode(value, {stream: true});
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const message = JSON.parse(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        if (message.error) throw new Error(message.error.code + ": " + message.error.message);
        if (message.done) {
          output.textContent = message.text;
          const total = performance.now() - started;
          showStatus("done in " + total.toFixed(0) + " ms (first token after " +
                     (firstToken === null ? total : firstToken).toFixed(0) + " ms)", false);
        } else {
          if (firstToken === null) firstToken = performance.now() - started;
          output.textContent += message.text_delta;
        }
      }
    }
  } catch (error) {
    showStatus(error.message, true);
  } finally {
    button.disabled = false;
  }
}

button.addEventListener("click", translate);
source.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) translate();
});
loadTasks();
</script>
</body>
</html>
)html";
  return kPage;
}

}  // namespace taskmoe::server
