"use strict";
// The offload dashboard page: polls api/snapshot, renders tables, draws the per-lane
// charts as hand-written SVG from the server's samples, and shows one task at #task/<id>.
(function () {
  const COUNTERS = ["submitted", "scheduled", "pending", "running", "retrying", "overrun",
    "succeeded", "failed", "cancelled", "retried", "timed_out", "rejected", "dropped"];
  const LATENCIES = ["queue_wait", "run_time"];
  const PERCENTILES = ["p50", "p90", "p99"];
  // What each chart draws: counts per sample become rates (per second); gauges stay levels.
  const CHARTS = [
    { series: "finished", title: "finished/s", rate: true },
    { series: "failed", title: "failures/s", rate: true },
    { series: "retried", title: "retries/s", rate: true },
    { series: "pending", title: "pending", rate: false },
  ];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const CHART_W = 220;
  const CHART_H = 56;
  const refreshMs = Number(document.body.dataset.refreshMs) || 1000;
  // The page's query string (e.g. an auth token) goes along with every API call.
  const query = window.location.search;
  const apiUrl = (path) => new URL("api/" + path + query, window.location.href);
  const seenFailures = new Set();
  const chartData = { samples: [], last: 0, keep: 900, interval: 1, series: [] };

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      node.setAttribute(name, String(value));
    }
    return node;
  }

  function taskLink(id) {
    const link = el("a", id);
    link.href = "#task/" + id;
    return link;
  }

  function seconds(value, count) {
    if (!count) return "\u2013";
    if (value < 1e-3) return (value * 1e6).toFixed(0) + " \u00b5s";
    if (value < 1) return (value * 1e3).toFixed(value < 0.01 ? 2 : 1) + " ms";
    return value.toFixed(2) + " s";
  }

  function clock(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) return "\u2013";
    return new Date(epochSeconds * 1000).toLocaleString();
  }

  function fromNow(epochSeconds) {
    if (epochSeconds === null || epochSeconds === undefined) return "";
    const delta = epochSeconds - Date.now() / 1000;
    const magnitude = Math.abs(delta);
    const text = magnitude < 90 ? magnitude.toFixed(0) + " s"
      : magnitude < 5400 ? (magnitude / 60).toFixed(0) + " min"
        : (magnitude / 3600).toFixed(1) + " h";
    return delta >= 0 ? "in " + text : text + " ago";
  }

  function duration(totalSeconds) {
    const plural = (n, unit) => n + " " + unit + (n === 1 ? "" : "s");
    if (totalSeconds < 60) return plural(Math.round(totalSeconds), "second");
    const minutes = totalSeconds / 60;
    return plural(Number(minutes.toFixed(minutes % 1 ? 1 : 0)), "minute");
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

  // --- the durable queue (shown only when the runtime's durable tier is in use) ---
  function renderDurable(durable) {
    const section = document.getElementById("durable");
    section.classList.toggle("hidden", !durable);
    if (!durable) return;
    document.getElementById("durable-store").textContent = durable.store;
    const depths = durable.depths;
    document.getElementById("durable-waiting").classList.toggle("hidden", Boolean(depths));
    const body = document.querySelector("#durable-depths tbody");
    if (!depths) {
      body.replaceChildren();
    } else {
      const states = depths.by_state;
      const age = depths.oldest_ready_age;
      const values = {
        ready: depths.ready, scheduled: depths.scheduled, running: states.running || 0,
        succeeded: states.succeeded || 0, dead: states.dead || 0,
        cancelled: states.cancelled || 0,
        oldest_ready: age === null ? "\u2013" : seconds(age, 1),
        live_leases: depths.leases.live, expired_leases: depths.leases.expired,
      };
      const row = el("tr");
      for (const [field, value] of Object.entries(values)) {
        const cell = el("td", value);
        cell.dataset.field = field;
        if ((field === "dead" || field === "expired_leases") && value > 0) {
          cell.className = "nonzero-failed";
        }
        row.appendChild(cell);
      }
      body.replaceChildren(row);
    }
    const p = durable.process;
    document.getElementById("durable-process").textContent = "this process: "
      + p.committed + " committed, " + p.started + " started, " + p.finished + " finished, "
      + p.running + " running (concurrency " + p.concurrency + ")";
  }

  // --- charts ----------------------------------------------------------------
  function addSamples(data) {
    if (data.last < chartData.last) chartData.samples = [];  // another runtime: start over
    chartData.keep = data.keep;
    chartData.interval = data.interval;
    chartData.series = data.series;
    chartData.last = data.last;
    chartData.samples.push(...data.samples);
    if (chartData.samples.length > chartData.keep) {
      chartData.samples.splice(0, chartData.samples.length - chartData.keep);
    }
  }

  function chartValues(lane, chart) {
    const index = chartData.series.indexOf(chart.series);
    return chartData.samples.map((sample) => {
      const values = sample.lanes[lane] || [];
      const value = values[index] || 0;
      return { time: sample.time, value: chart.rate ? value / sample.dt : value, count: value };
    });
  }

  function formatValue(value) {
    if (value === 0) return "0";
    if (value >= 100) return value.toFixed(0);
    return value >= 10 ? value.toFixed(1) : value.toFixed(2);
  }

  function drawChart(lane, chart) {
    const points = chartValues(lane, chart);
    const windowSeconds = chartData.keep * chartData.interval;
    const newest = points.length ? points[points.length - 1].time : 0;
    const max = Math.max(0, ...points.map((p) => p.value));
    const top = max > 0 ? max : 1;
    const x = (t) => CHART_W - ((newest - t) / windowSeconds) * CHART_W;
    const y = (v) => CHART_H - 2 - (v / top) * (CHART_H - 4);
    const coordinates = points.map((p) => x(p.time).toFixed(1) + "," + y(p.value).toFixed(1));

    const image = svg("svg", {
      class: "chart", viewBox: "0 0 " + CHART_W + " " + CHART_H,
      preserveAspectRatio: "none", role: "img",
      "aria-label": lane + " " + chart.title + " over the last " + windowSeconds + " s",
    });
    image.dataset.lane = lane;
    image.dataset.series = chart.series;
    image.dataset.max = String(max);
    image.dataset.total = String(points.reduce((sum, p) => sum + p.count, 0));
    image.dataset.points = String(points.length);
    image.appendChild(svg("line", { class: "grid", x1: 0, x2: CHART_W, y1: CHART_H - 1, y2: CHART_H - 1 }));
    if (coordinates.length) {
      const first = x(points[0].time).toFixed(1);
      const last = x(newest).toFixed(1);
      image.appendChild(svg("polygon", {
        class: "area",
        points: first + "," + CHART_H + " " + coordinates.join(" ") + " " + last + "," + CHART_H,
      }));
      image.appendChild(svg("polyline", { class: "line", points: coordinates.join(" ") }));
    }
    const figure = el("figure", undefined, "chart");
    const caption = el("figcaption");
    caption.appendChild(el("span", chart.title));
    const now = points.length ? points[points.length - 1].value : 0;
    caption.appendChild(el("span", formatValue(now) + " (max " + formatValue(max) + ")", "now"));
    figure.appendChild(caption);
    figure.appendChild(image);
    return figure;
  }

  function renderCharts(lanes) {
    const rows = Object.keys(lanes).map((lane) => {
      const row = el("div", undefined, "lane-charts");
      row.dataset.lane = lane;
      row.appendChild(el("span", lane, "lane-name"));
      for (const chart of CHARTS) row.appendChild(drawChart(lane, chart));
      return row;
    });
    document.getElementById("charts").replaceChildren(...rows);
    document.getElementById("history-window").textContent =
      duration(chartData.keep * chartData.interval);
    document.getElementById("charts-empty").classList.toggle("hidden", chartData.samples.length > 0);
  }

  // --- tables ----------------------------------------------------------------
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
      const id = el("td");
      id.appendChild(taskLink(task.id));
      row.appendChild(id);
      row.appendChild(el("td", task.name, "name"));
      row.appendChild(el("td", task.lane, "lane"));
      row.appendChild(el("td", task.state, "state state-" + task.state));
      row.appendChild(el("td", task.age.toFixed(1) + " s", "age"));
      row.appendChild(el("td", formatArgs(task), "args"));
      return row;
    });
    document.querySelector("#tasks tbody").replaceChildren(...rows);
    const shown = tasks.items.length < tasks.total ? ", " + tasks.items.length + " shown" : "";
    const counts = ["running", "pending", "scheduled", "retrying"]
      .filter((state) => state === "running" || state === "pending" || tasks[state] > 0)
      .map((state) => tasks[state] + " " + state);
    document.getElementById("tasks-count").textContent = "(" + counts.join(", ") + shown + ")";
    document.getElementById("tasks-empty").classList.toggle("hidden", tasks.total > 0);
    if (tasks.items.some((task) => task.args)) document.body.classList.add("show-args");
  }

  function renderSchedules(schedules) {
    const periodic = schedules.periodic.map((schedule) => {
      const row = el("tr");
      row.dataset.schedule = schedule.name;
      row.appendChild(el("td", schedule.name, "name"));
      const next = el("td", schedule.next_run === null ? "not scheduled"
        : clock(schedule.next_run) + " (" + fromNow(schedule.next_run) + ")", "next-run");
      row.appendChild(next);
      row.appendChild(el("td", schedule.runs, "runs"));
      row.appendChild(el("td", schedule.skipped, "skipped"));
      const last = el("td", undefined, "last-task");
      if (schedule.last_task) {
        last.appendChild(taskLink(schedule.last_task.id));
        last.appendChild(document.createTextNode(" " + schedule.last_task.state));
      }
      row.appendChild(last);
      return row;
    });
    document.querySelector("#periodic tbody").replaceChildren(...periodic);
    document.getElementById("periodic-count").textContent = periodic.length
      ? "(" + periodic.length + ")" : "";
    document.getElementById("periodic-empty").classList.toggle("hidden", periodic.length > 0);

    const delayed = schedules.delayed.map((task) => {
      const row = el("tr");
      row.dataset.taskId = task.id;
      const id = el("td");
      id.appendChild(taskLink(task.id));
      row.appendChild(id);
      row.appendChild(el("td", task.name, "name"));
      row.appendChild(el("td", task.lane, "lane"));
      row.appendChild(el("td", task.key === null ? "" : task.key, "key"));
      row.appendChild(el("td", clock(task.scheduled_for) + " (" + fromNow(task.scheduled_for) + ")",
        "runs-at"));
      return row;
    });
    document.querySelector("#delayed tbody").replaceChildren(...delayed);
    document.getElementById("delayed-count").textContent = schedules.delayed_total
      ? "(" + schedules.delayed_total + ")" : "";
    document.getElementById("delayed-empty").classList.toggle("hidden", delayed.length > 0);
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

  // --- the task view (#task/<id>) ----------------------------------------------
  function shownTaskId() {
    const match = /^#task\/(\d+)$/.exec(window.location.hash);
    return match ? match[1] : null;
  }

  function taskRows(task) {
    const span = (from, to) => (from !== null && to !== null ? seconds(to - from, 1) : "\u2013");
    const start = task.scheduled_for !== null && task.scheduled_for > task.submitted_at
      ? task.scheduled_for : task.submitted_at;
    return [
      ["id", task.id], ["name", task.name], ["lane", task.lane], ["state", task.state],
      ["attempt", task.attempt], ["key", task.key === null ? "\u2013" : task.key],
      ["submitted_at", clock(task.submitted_at)],
      ["scheduled_for", task.scheduled_for === null ? "\u2013"
        : clock(task.scheduled_for) + " (" + fromNow(task.scheduled_for) + ")"],
      ["started_at", clock(task.started_at)], ["finished_at", clock(task.finished_at)],
      ["waited", span(start, task.started_at)], ["ran", span(task.started_at, task.finished_at)],
      ["error", task.error === null ? "\u2013" : task.error],
    ];
  }

  function renderTask(id, status, task) {
    document.getElementById("task-title").textContent = "#" + id;
    const missing = document.getElementById("task-missing");
    const table = document.getElementById("task-detail");
    const traceback = document.getElementById("task-traceback");
    missing.classList.toggle("hidden", status === 200);
    table.classList.toggle("hidden", status !== 200);
    if (status !== 200) {
      missing.textContent = status === 404
        ? "No task with id " + id + ": unknown, or finished and no longer kept."
        : "HTTP " + status + " while loading task " + id + ".";
      traceback.classList.add("hidden");
      return;
    }
    const rows = taskRows(task).map(([field, value]) => {
      const row = el("tr");
      row.appendChild(el("th", field.replace("_", " ")));
      const cell = el("td", value);
      cell.dataset.field = field;
      if (field === "state") cell.className = "state-" + task.state;
      if (field === "error" && task.error !== null) cell.className = "error";
      row.appendChild(cell);
      return row;
    });
    table.querySelector("tbody").replaceChildren(...rows);
    traceback.textContent = task.traceback || "";
    traceback.classList.toggle("hidden", !task.traceback);
  }

  async function refreshTask() {
    const id = shownTaskId();
    document.getElementById("task-view").classList.toggle("hidden", id === null);
    if (id === null) return;
    const response = await fetch(apiUrl("task/" + id), { cache: "no-store", credentials: "same-origin" });
    if (id !== shownTaskId()) return;  // the user went elsewhere meanwhile
    renderTask(id, response.status, response.ok ? await response.json() : null);
  }

  // --- polling -----------------------------------------------------------------
  let timer = null;

  async function refresh() {
    window.clearTimeout(timer);
    try {
      const url = apiUrl("snapshot");
      url.searchParams.set("after", String(chartData.last));
      const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) {
        setStatus("HTTP " + response.status + " from " + url.pathname, true);
        return;
      }
      const data = await response.json();
      addSamples(data.history);
      renderCharts(data.lanes);
      renderLanes(data.lanes);
      renderDurable(data.durable);
      renderTasks(data.tasks);
      renderSchedules(data.schedules);
      renderFailures(data.failures);
      await refreshTask();
      const state = data.runtime.closed ? "closed" : data.runtime.started ? "running" : "idle";
      setStatus("runtime " + state + " \u00b7 updated " + new Date().toLocaleTimeString(), false);
    } catch (error) {
      setStatus("disconnected (" + error.message + ")", true);
    } finally {
      timer = window.setTimeout(refresh, refreshMs);
    }
  }

  document.getElementById("find-task").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = document.getElementById("find-task-id").value.trim();
    if (/^\d+$/.test(id)) window.location.hash = "#task/" + id;
  });
  document.getElementById("task-close").addEventListener("click", (event) => {
    event.preventDefault();
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    document.getElementById("task-view").classList.add("hidden");
  });
  window.addEventListener("hashchange", () => { refreshTask().catch(() => {}); });

  refresh();
})();
