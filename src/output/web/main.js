// Start-up: ask which roles the server has, show a tab for each, poll the
// visible one (and keep the others' state current).

const VIEWS = {
  conns: { title: "Connections", setup: setupConns, poll: pollConns, render: renderConns },
  cost: { title: "CPU cost", setup: setupCost, poll: pollCost, render: renderCost },
};

let current = null;

function show(role) {
  current = role;
  for (const name of Object.keys(VIEWS)) {
    const on = name === role;
    $("view-" + name).hidden = !on;
    const tab = $("tab-" + name);
    if (tab) tab.setAttribute("aria-selected", String(on));
  }
  if (location.hash !== "#" + role) history.replaceState(null, "", "#" + role);
  VIEWS[role].render();
}

// Polls one role forever, at the pace it asks for; errors show in the
// status line and are retried.
async function pollLoop(role) {
  let wait = 2000;
  try {
    wait = await VIEWS[role].poll();
    if (role === current) setStatus(paused() ? "paused" : "live");
  } catch (e) {
    setStatus("netlens is not answering (" + e.message + "); retrying...", true);
  }
  setTimeout(() => pollLoop(role), wait);
}

async function start() {
  let roles;
  try {
    roles = (await getJson("api/roles")).roles.filter((r) => VIEWS[r]);
  } catch (e) {
    setStatus("netlens is not answering (" + e.message + "); reload to retry", true);
    return;
  }
  if (!roles.length) { $("no-roles").hidden = false; return; }
  document.title = "netlens " + roles.join(" + ");
  $("tabs").innerHTML = roles.map((r) => `<button type="button" role="tab" id="tab-${r}" ` +
    `aria-controls="view-${r}" aria-selected="false">${esc(VIEWS[r].title)}</button>`).join("");
  $("tabs").hidden = roles.length < 2;
  for (const r of roles) {
    $("tab-" + r).addEventListener("click", () => show(r));
    VIEWS[r].setup();
  }
  const wanted = location.hash.slice(1);
  show(roles.includes(wanted) ? wanted : roles[0]);
  for (const r of roles) pollLoop(r);
}

$("pause").addEventListener("change", () => {
  if (!paused() && current) VIEWS[current].render();
});
window.addEventListener("resize", () => { if (current === "cost") renderCost(); });
start();
