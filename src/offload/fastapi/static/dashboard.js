"use strict";
(function () {
  const COUNTERS = ["submitted", "pending", "running", "succeeded", "failed", "cancelled",
    "rejected", "dropped"];
  const LATENCIES = ["queue_wait", "run_time"];
  const PERCENTILES = ["p50", "p90", "p99"];
  const refreshMs = Number(document.body.dataset.refreshMs) || 1000;
  // The page's query string (e.g. an auth token) goes along with every API call.
  const snapshotUrl = new URL("api/snapshot" + window.location.search, window.location.href);
  const seenFailures = new Set();

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function seconds(value, count) {
    if (!count) return "\u2013";
    if (value < 1e-3) return (value * 1e6).toFixed(0) + " \u00b5s";
    if (value < 1) return (value * 1e3).toFixed(value < 0.01 ? 2 : 1) + " ms";
    return value.toFixed(2) + " s";
  }

  function setStatus(text, isError) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function renderLanes(lanes) {
    const body = document.querySelector("#lanes tbody");
    const rows = [];
    for (const [name, lane] of Object.entries(lanes)) {
      const row = el("tr");
      row.dataset.lane = name;
      row.appendChild(el("td", name));
      for (const key of COUNTERS) {
        const cell = el("td", lane[key]);
        cell.dataset.field = key;
        if (key === "failed" && lane[key] > 0) cell.className = "nonzero-failed";
        row.appendChild(cell);
      }
      for (const latency of LATENCIES) {
        for (const p of PERCENTILES) {
          const cell = el("td", seconds(lane[latency][p], lane[latency].count));
          cell.dataset.field = latency + "_" + p;
          row.appendChild(cell);
        }
      }
      rows.push(row);
    }
    body.replaceChildren(...rows);
  }

  function formatArgs(task) {
    if (!task.args) return "";
    const parts = task.args.slice();
    for (const [key, value] of Object.entries(task.kwargs || {})) parts.push(key + "=" + value);
    return parts.join(", ");
  }

  function renderTasks(tasks) {
    const rows = tasks.items.map((task) => {
      const row = el("tr");
      row.dataset.taskId = task.id;
      row.appendChild(el("td", task.id));
      row.appendChild(el("td", task.name, "name"));
      row.appendChild(el("td", task.lane, "lane"));
      row.appendChild(el("td", task.state, "state state-" + task.state));
      row.appendChild(el("td", task.age.toFixed(1) + " s", "age"));
      row.appendChild(el("td", formatArgs(task), "args"));
      return row;
    });
    document.querySelector("#tasks tbody").replaceChildren(...rows);
    const shown = tasks.items.length < tasks.total ? ", " + tasks.items.length + " shown" : "";
    document.getElementById("tasks-count").textContent =
      "(" + tasks.running + " running, " + tasks.pending + " pending" + shown + ")";
    document.getElementById("tasks-empty").classList.toggle("hidden", tasks.total > 0);
    if (tasks.items.some((task) => task.args)) document.body.classList.add("show-args");
  }

  function failureNode(failure) {
    const node = el("details", undefined, "failure");
    node.dataset.seq = failure.seq;
    const summary = el("summary");
    summary.appendChild(el("span", new Date(failure.time * 1000).toLocaleTimeString() + " ",
      "when"));
    const who = failure.task_name !== null
      ? failure.task_name + " (" + failure.lane + ", id " + failure.task_id + ")"
      : failure.message;
    summary.appendChild(el("span", who + ": ", "task"));
    summary.appendChild(el("span", failure.exception, "exception"));
    node.appendChild(summary);
    node.appendChild(el("pre", failure.traceback, "traceback"));
    return node;
  }

  function renderFailures(failures) {
    const list = document.getElementById("failures");
    // Oldest first, each inserted at the top: the newest ends up first, open ones stay open.
    for (const failure of failures.items.slice().reverse()) {
      if (seenFailures.has(failure.seq)) continue;
      seenFailures.add(failure.seq);
      list.insertBefore(failureNode(failure), list.firstChild);
    }
    const keep = new Set(failures.items.map((failure) => String(failure.seq)));
    for (const node of Array.from(list.children)) {
      if (!keep.has(node.dataset.seq)) node.remove();
    }
    document.getElementById("failures-count").textContent = "(" + failures.total + " in total)";
    document.getElementById("failures-empty").classList.toggle("hidden", failures.total > 0);
  }

  async function refresh() {
    try {
      const response = await fetch(snapshotUrl, { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) {
        setStatus("HTTP " + response.status + " from " + snapshotUrl.pathname, true);
        return;
      }
      const data = await response.json();
      renderLanes(data.lanes);
      renderTasks(data.tasks);
      renderFailures(data.failures);
      const state = data.runtime.closed ? "closed" : data.runtime.started ? "running" : "idle";
      setStatus("runtime " + state + " \u00b7 updated " + new Date().toLocaleTimeString(), false);
    } catch (error) {
      setStatus("disconnected (" + error.message + ")", true);
    } finally {
      window.setTimeout(refresh, refreshMs);
    }
  }

  refresh();
})();
