// Upstreams: each backend's health, last check, latency, since when, tier in use, panic; filter,
// search, pages of 50 upstreams (the server filters and pages: 1,000 upstreams stay quick);
// drain / undrain for the upstreams the user may write (force_status through the REST API).

import { ago, clock, duration, el, setClass, setText, stamp } from "./dom.js";

const PAGE = 50;
const number = (n) => n.toLocaleString("en-US");

function tiers(list) {
  if (!list.length) return "no tier in use";
  return list.length === 1 ? `tier ${list[0]} in use` : `tiers ${list.join(", ")} in use`;
}

export class UpstreamsPage {
  constructor(root, context) {
    this.root = root;
    this.api = context.api;
    this.confirm = context.confirm;
    this.offset = 0;
    this.table = root.querySelector("#upstreams-table");
    this.counts = root.querySelector("#upstreams-counts");
    this.range = root.querySelector("#upstreams-range");
    this.prev = root.querySelector("#upstreams-prev");
    this.next = root.querySelector("#upstreams-next");
    this.q = root.querySelector("#upstreams-q");
    this.state = root.querySelector("#upstreams-state");
    this.message = el("p", { className: "error", role: "alert" });
    this.table.before(this.message);
    this.signature = "";
    this.blocks = new Map(); // upstream name -> {head cells, rows: Map hostname -> cells}
    this.painted = false;
    let typing = null;
    this.q.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => this.restart(), 250);
    });
    this.state.addEventListener("change", () => this.restart());
    root.querySelector("#upstreams-filter").addEventListener("submit", (e) => {
      e.preventDefault();
      this.restart();
    });
    this.prev.addEventListener("click", () => this.turn(-PAGE));
    this.next.addEventListener("click", () => this.turn(PAGE));
  }

  shown() {}

  problem(message) {
    setText(this.message, message);
  }

  restart() {
    this.offset = 0;
    this.refresh().catch((e) => this.problem(e.message));
  }

  turn(by) {
    this.offset = Math.max(0, this.offset + by);
    this.refresh().catch((e) => this.problem(e.message));
  }

  async refresh() {
    const query = new URLSearchParams({ offset: this.offset, limit: PAGE, state: this.state.value });
    const q = this.q.value.trim();
    if (q) query.set("q", q);
    const page = await this.api.call("GET", `/health?${query}`);
    if (page.offset >= page.total && page.total > 0) {
      this.offset = Math.floor((page.total - 1) / PAGE) * PAGE;
      return this.refresh();
    }
    this.render(page);
    if (!this.painted) {
      this.painted = true;
      requestAnimationFrame(() => performance.mark("upstreams-painted"));
    }
  }

  render(page) {
    const c = page.counts;
    setText(
      this.counts,
      `${number(c.upstreams)} upstreams, ${number(c.backends)} backends: ${number(c.up)} up, ${number(c.down)} down, ` +
        `${number(c.drained)} drained, ${number(c.forced)} forced up; ${number(c.panic)} in panic` +
        (c.refused ? `; ${number(c.refused)} refused by the renderer` : ""),
    );
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.upstreams.length;
    setText(this.range, `upstreams ${number(first)}–${number(last)} of ${number(page.total)}`);
    this.prev.disabled = page.offset === 0;
    this.next.disabled = last >= page.total;
    const signature = page.upstreams.map((u) => `${u.name}\t${u.access}\t${u.backends.map((b) => b.hostname).join("\t")}`).join("\n");
    if (signature !== this.signature) this.build(page.upstreams, signature);
    for (const upstream of page.upstreams) this.update(upstream);
  }

  build(upstreams, signature) {
    const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
    this.signature = signature;
    this.blocks.clear();
    for (const body of [...this.table.tBodies]) body.remove();
    for (const u of upstreams) {
      const head = {
        name: el("span", { className: "name" }, u.name),
        description: el("span", { className: "description" }),
        facts: el("span", { className: "facts" }),
        panic: el("span", { className: "badge panic", hidden: true }, "PANIC: every backend not drained is enabled"),
        refused: el("span", { className: "badge refused", hidden: true }),
      };
      const body = el("tbody", { dataset: { upstream: u.name } },
        el("tr", { className: "upstream-head" }, el("th", { scope: "rowgroup", colspan: 8 }, head.name, head.description, head.facts, head.panic, head.refused)));
      const rows = new Map();
      for (const b of u.backends) {
        const cells = {
          host: el("th", { scope: "row", className: "host" }, b.hostname),
          health: el("td", { className: "health" }),
          role: el("td", { className: "role" }),
          tier: el("td", { className: "num" }),
          check: el("td", { className: "check" }),
          latency: el("td", { className: "num latency" }),
          since: el("td", { className: "since" }),
          actions: el("td", { className: "actions" }),
        };
        if (u.access === "write") {
          cells.button = el("button", { type: "button", dataset: { key: `${u.name}\n${b.hostname}` } });
          cells.button.addEventListener("click", () => this.act(u.name, b.hostname, cells.button.dataset.action));
          cells.actions.append(cells.button);
        }
        body.append(el("tr", { dataset: { backend: b.hostname } }, ...Object.values(cells).filter((n) => n !== cells.button)));
        rows.set(b.hostname, cells);
      }
      this.table.append(body);
      this.blocks.set(u.name, { head, rows });
    }
    if (focused) {
      const again = [...this.table.querySelectorAll("button[data-key]")].find((b) => b.dataset.key === focused);
      if (again) again.focus();
    }
  }

  update(u) {
    const block = this.blocks.get(u.name);
    setText(block.head.description, u.description ? ` ${u.description}` : "");
    setText(block.head.facts, ` · ${tiers(u.tiers_in_use)} · min_servers ${u.min_servers} · checks: ${u.checks.length ? u.checks.join(", ") : "none (always up)"}`);
    block.head.panic.hidden = !u.panic;
    const refused = u.refused || [];
    block.head.refused.hidden = refused.length === 0;
    setText(block.head.refused, refused.length
      ? `REFUSED on ${refused.map((r) => r.access_node).join(", ")}: ${refused[0].message} (its files kept as they are live)`
      : "");
    for (const b of u.backends) {
      const cells = block.rows.get(b.hostname);
      setText(cells.health, b.health);
      setClass(cells.health, `health ${b.health}`);
      cells.health.dataset.health = b.health;
      setText(cells.role, b.role);
      setClass(cells.role, `role ${b.role}`);
      setText(cells.tier, b.failover);
      const check = b.checked ? `${b.detail || "passed"} at ${clock(b.checked)}` : u.checks.length ? "no result yet" : "not checked";
      setText(cells.check, check);
      setText(cells.latency, duration(b.seconds));
      setText(cells.since, b.since ? ago(b.since) : b.checked ? "since the first check" : "");
      cells.since.title = b.since ? stamp(b.since) : "";
      if (cells.button) {
        const drain = b.force_status === "normal";
        cells.button.dataset.action = drain ? "down" : "normal";
        setText(cells.button, drain ? "Drain" : b.force_status === "down" ? "Undrain" : "Clear forced up");
        cells.button.setAttribute("aria-label", `${drain ? "Drain" : "Undrain"} ${b.hostname} of upstream ${u.name}`);
        setClass(cells.button, drain ? "drain" : "undrain");
      }
    }
  }

  async act(upstream, hostname, status) {
    const drain = status === "down";
    const ok = await this.confirm(
      drain ? "Drain this backend?" : "Put this backend back?",
      drain
        ? `${hostname} of upstream ${upstream} will get no traffic (force_status: down) until it is undrained.`
        : `${hostname} of upstream ${upstream} goes back to normal: its health checks decide again (force_status: normal).`,
      drain ? "Drain" : "Undrain",
    );
    if (!ok) return;
    try {
      await this.api.call("PATCH", `/upstream/${encodeURIComponent(upstream)}/node/${encodeURIComponent(hostname)}`, { force_status: status });
      this.problem("");
    } catch (error) {
      this.problem(`${drain ? "Drain" : "Undrain"} ${hostname}: ${error.message}`);
    }
    await this.refresh().catch(() => {});
  }
}
