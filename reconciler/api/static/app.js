// The dashboard: log in, then one page at a time (Fleet, Upstreams, History), refreshed every second.

import { Api } from "./api.js";
import { clock } from "./dom.js";
import { FleetPage } from "./fleet.js";
import { UpstreamsPage } from "./upstreams.js";
import { HistoryPage } from "./history.js";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);

let lastGood = Date.now() / 1000;
let lostSince = null;

function showConnection(ok, detail) {
  const banner = $("connection");
  if (ok) {
    lostSince = null;
    banner.hidden = true;
    banner.textContent = "";
    document.body.classList.remove("offline");
    return;
  }
  if (lostSince === null) lostSince = Date.now() / 1000;
  banner.hidden = false;
  banner.textContent = `Connection to serve lost at ${clock(lostSince)} (${detail}); retrying every second. What is shown is from ${clock(lastGood)}.`;
  document.body.classList.add("offline");
}

const api = new Api(showConnection);

/** Ask before an action: resolves true when the user confirms. */
export function confirmAction(title, text, action) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = action;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

const context = { api, confirm: confirmAction };
const pages = {
  fleet: new FleetPage($("page-fleet"), context),
  upstreams: new UpstreamsPage($("page-upstreams"), context),
  history: new HistoryPage($("page-history"), context),
};

let current = null;
let timer = null;
let generation = 0;

function pageName() {
  const name = location.hash.replace(/^#/, "");
  return Object.hasOwn(pages, name) ? name : "fleet";
}

async function tick(mine) {
  if (mine !== generation || !api.loggedIn) return;
  const page = pages[current];
  try {
    await page.refresh();
    lastGood = Date.now() / 1000;
    await api.renew();
  } catch (error) {
    if (error.status === 401) return showLogin("Your session ended: log in again.");
    if (error.status !== 0 && error.status < 500) page.problem(error.message);
  }
  if (mine === generation) timer = setTimeout(() => tick(mine), POLL_MS);
}

function show(name) {
  clearTimeout(timer);
  generation += 1;
  current = name;
  for (const [key, page] of Object.entries(pages)) page.root.hidden = key !== name;
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · obreconcile`;
  pages[name].shown();
  tick(generation);
}

function showLogin(message = "") {
  clearTimeout(timer);
  generation += 1;
  for (const page of Object.values(pages)) page.root.hidden = true;
  $("nav").hidden = $("logout").hidden = true;
  $("who").textContent = "";
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("login-user").focus();
}

function showApp() {
  $("login").hidden = true;
  $("nav").hidden = $("logout").hidden = false;
  $("who").textContent = `signed in as ${api.session.user}`;
  show(pageName());
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const user = $("login-user").value.trim();
  const password = $("login-password").value;
  if (!user || !password) {
    $("login-error").textContent = "Give a user name and a password.";
    return;
  }
  try {
    await api.login(user, password);
  } catch (error) {
    $("login-error").textContent = error.status === 0 ? "serve does not answer" : error.message;
    return;
  }
  $("login-password").value = "";
  showApp();
});

$("logout").addEventListener("click", async () => {
  try {
    await api.logout();
  } catch (error) {
    // the token is forgotten here whatever serve said
  }
  showLogin("Logged out.");
});

window.addEventListener("hashchange", () => {
  if (api.loggedIn) show(pageName());
});

if (api.loggedIn) showApp();
else showLogin();
