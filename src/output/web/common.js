// netlens web UI: helpers shared by the views (common.js, then conns.js,
// cost.js and main.js, served together as app.js).
"use strict";

const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
const sum = (a) => a.reduce((x, y) => x + y, 0);

// An exact integer with thousands separators: counters are shown exactly.
function fmtInt(n) {
  return n == null ? "-" : Number(n).toLocaleString("en-US");
}

// Bytes (or bytes per second) with a binary-free SI unit: 1.5 kB, 12 MB.
function fmtBytes(n, suffix) {
  if (n == null) return "-";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  const digits = i === 0 || n >= 100 ? 0 : n >= 10 ? 1 : 2;
  return n.toFixed(digits) + " " + units[i] + (suffix || "");
}

// Seconds as a short age: 45 s, 12 min, 3.5 h, 2.0 d.
function fmtAge(s) {
  if (s == null) return "before start";
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return (s / 60).toFixed(0) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

// GET path as JSON; throws with the status on anything but 200.
async function getJson(path) {
  const resp = await fetch(path, { cache: "no-store" });
  if (resp.status === 503) return null;
  if (!resp.ok) throw new Error(path + ": HTTP " + resp.status);
  return resp.json();
}

const paused = () => $("pause").checked;

// The header's status line: what the visible view says, or the error.
function setStatus(text, down) {
  $("status").textContent = text;
  $("status").className = down ? "down" : "";
}
