"""The review page's HTML, CSS and JavaScript: one offline page over every suspect of an audit.

:func:`render` puts the page data (see :func:`noisyseg.audit.review.page_data`) into a plain HTML file
with its own CSS and script, written here; nothing is fetched from a network and nothing is built. The
crops are JPEG sheets beside the page (``review_files/``); the page shows one screenful of suspects at a
time, so only the sheets of that screen are read. Decisions live in the browser's localStorage under a
key made from the audit's id (so two audits never share decisions, and a reload keeps them) and are
exported as a decisions file for ``noisyseg apply-decisions``.

Keys (shown by ``?`` on the page): next / previous suspect (arrows, ``n`` / ``p``), next / previous
screen (PageDown / PageUp), ``k`` keep the label, ``r`` relabel to the suggestion, ``1``-``3`` relabel to
the 1st-3rd most probable class, ``c`` relabel to any class, ``i`` ignore the class, ``d`` drop, ``u``
clear the decision, ``f`` the whole image, ``e`` export.
"""

from __future__ import annotations

import json
from typing import Any

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;background:#eef0f2;color:#1d2327;font-size:13px}
header{display:flex;align-items:center;gap:16px;padding:8px 14px;background:#1d2327;color:#fff}
header h1{font-size:16px;margin:0;font-weight:600}
header .counts{flex:1;font-size:13px;color:#d0d6db}
header button{font:inherit;padding:4px 10px;border-radius:4px;border:0;cursor:pointer}
#export{background:#ffd54a;color:#1d2327;font-weight:600}
#helpbtn{background:#3c4750;color:#fff}
.layout{display:grid;grid-template-columns:250px 1fr 300px;gap:10px;padding:10px;align-items:start}
aside,#detail{background:#fff;border-radius:6px;padding:10px;box-shadow:0 1px 2px #0002}
#detail{position:sticky;top:10px}
aside h2,#detail h2{font-size:13px;margin:10px 0 6px;text-transform:uppercase;letter-spacing:.04em;color:#56606a}
aside h2:first-child,#detail h2:first-child{margin-top:0}
aside label{display:block;margin:4px 0 2px;color:#56606a}
aside select,aside input[type=number]{width:100%;font:inherit;padding:2px}
.range{display:flex;gap:6px}.range input{width:50%}
button.clear{font:inherit;margin-top:6px;padding:2px 8px}
.bars{max-height:300px;overflow-y:auto}
.bar{cursor:pointer;margin:2px 0;padding:1px 2px;border-radius:3px}.bar:hover{background:#f0f3f5}
.bar .name{display:flex;justify-content:space-between;gap:6px;font-size:12px}
.bar .name span:first-child{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.bar .name span:last-child{white-space:nowrap;color:#56606a}
.bar .rt{font-size:11px;color:#7a2a28}
.bar .track{height:7px;background:#e3e7ea;border-radius:3px;overflow:hidden;position:relative}
.bar .fill{height:100%;background:#d9534f}.bar .right{position:absolute;top:0;height:100%;background:#7a2a28}
.note{font-size:11px;color:#6b757e;margin:4px 0;overflow-wrap:anywhere}
#confusion{width:228px;height:228px;cursor:crosshair;border:1px solid #ccd}
#conftip{font-size:12px;min-height:16px}
main .pager{display:flex;align-items:center;gap:8px;margin-bottom:8px}
main .pager button{font:inherit;padding:2px 10px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(168px,1fr));gap:8px}
.card{background:#fff;border-radius:6px;padding:6px;box-shadow:0 1px 2px #0002;border:3px solid transparent;
 cursor:pointer;font-size:12px;line-height:1.35}
.card.cur{border-color:#1e88e5}
.card .top{display:flex;justify-content:space-between;color:#6b757e;font-size:11px}
.tile{width:152px;height:152px;margin:3px auto;border-radius:3px;background-color:#181818;background-repeat:no-repeat}
.given{color:#b00020;font-weight:600}.sugg{color:#00695c;font-weight:600}
.dec{display:inline-block;border-radius:3px;padding:0 5px;font-weight:600;color:#fff;font-size:11px}
.dec.keep{background:#2e7d32}.dec.relabel{background:#1565c0}.dec.ignore{background:#8d6e00}.dec.drop{background:#b71c1c}
.card.keep{border-color:#2e7d32}.card.relabel{border-color:#1565c0}.card.ignore{border-color:#8d6e00}
.card.drop{border-color:#b71c1c}.card.cur{box-shadow:0 0 0 3px #1e88e588}
.flag{background:#b00020;color:#fff;border-radius:3px;padding:0 4px;font-size:10px}
.truth.ok{color:#2e7d32}.truth.bad{color:#b00020}
#detail .big{width:256px;height:256px;margin:0 auto 6px;border-radius:4px;background-color:#181818;
 background-repeat:no-repeat}
.probs div{display:flex;align-items:center;gap:6px;margin:2px 0}
.probs .pb{flex:1;height:8px;background:#e3e7ea;border-radius:3px;overflow:hidden}
.probs .pb i{display:block;height:100%;background:#00897b}
.probs .pn{width:110px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.actions{display:grid;grid-template-columns:1fr 1fr;gap:4px;margin-top:8px}
.actions button{font:inherit;padding:4px;border:1px solid #c5ccd2;background:#f7f9fa;border-radius:4px;
 cursor:pointer;text-align:left}
.actions button:hover{background:#e9eef2}
kbd{font-family:ui-monospace,monospace;background:#e9ecef;border:1px solid #c5ccd2;border-radius:3px;
 padding:0 4px;font-size:11px}
.modal{position:fixed;inset:0;background:#000a;display:none;align-items:center;justify-content:center;z-index:9}
.modal.open{display:flex}
.modal .box{background:#fff;border-radius:6px;padding:14px;max-width:92vw;max-height:92vh;overflow:auto}
#picklist{max-height:50vh;overflow-y:auto;min-width:280px}
#picklist div{padding:3px 6px;cursor:pointer;border-radius:3px}#picklist div.hi{background:#1e88e5;color:#fff}
#pickq{width:100%;font:inherit;padding:4px;margin-bottom:6px}
.whole{position:relative;display:inline-block}.whole img{display:block;max-width:88vw;max-height:80vh;
 min-width:256px;image-rendering:auto}
.whole .box{position:absolute;border:2px solid #ffd54a;box-shadow:0 0 0 1px #000;padding:0;border-radius:0;
 background:transparent;max-width:none;max-height:none;overflow:visible}
table.keys td{padding:2px 8px}
.empty{padding:30px;text-align:center;color:#6b757e}
"""

JS = r"""
'use strict';
const D = JSON.parse(document.getElementById('audit-data').textContent);
const N = D.s.length, K = D.classes.length, PS = D.page_size;
const F = {id:0, img:1, rank:2, given:3, sugg:4, q:5, top:6, bg:7, clean:8, flagged:9, bbox:10};
const KEY = 'noisyseg-review/' + D.audit.id;
const ACTIONS = ['keep', 'relabel', 'ignore', 'drop'];
let decisions = {}, storageOk = true;
try { decisions = JSON.parse(localStorage.getItem(KEY) || '{}') || {}; }
catch (e) { storageOk = false; decisions = {}; }
let view = [], page = 0, cur = 0;  // cur: position in view
const filt = {given: -1, sugg: -1, qmin: 0, qmax: 1, status: 'all'};
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v; else if (k === 'style') e.style.cssText = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
  return e;
}
const cname = (c) => D.classes[c].name;
const pct = (a, b) => b ? (100 * a / b).toFixed(0) + '%' : '-';
const fmt = (n) => n.toLocaleString('en-US');

function save() {
  if (!storageOk) return;
  try { localStorage.setItem(KEY, JSON.stringify(decisions)); }
  catch (e) { storageOk = false; $('storage').textContent = 'decisions are NOT saved: local storage is full or off'; }
}

function tileStyle(i, size) {
  const t = D.tiles, sheet = Math.floor(i / t.per_sheet), k = i % t.per_sheet;
  const col = k % t.columns, row = Math.floor(k / t.columns);
  return `background-image:url("${t.prefix}${String(sheet).padStart(5, '0')}.jpg");` +
    `background-size:${t.columns * size}px ${t.rows * size}px;` +
    `background-position:${-col * size}px ${-row * size}px`;
}

function statusOf(i) { const d = decisions[D.s[i][F.id]]; return d ? d[0] : 'undecided'; }

function applyFilters(keepId) {
  view = [];
  for (let i = 0; i < N; i++) {
    const r = D.s[i];
    if (filt.given >= 0 && r[F.given] !== filt.given) continue;
    if (filt.sugg >= 0 && r[F.sugg] !== filt.sugg) continue;
    if (r[F.q] < filt.qmin || r[F.q] > filt.qmax) continue;
    const st = statusOf(i);
    if (filt.status === 'undecided' && st !== 'undecided') continue;
    if (filt.status === 'decided' && st === 'undecided') continue;
    if (ACTIONS.includes(filt.status) && st !== filt.status) continue;
    view.push(i);
  }
  let pos = keepId === undefined ? -1 : view.findIndex((i) => D.s[i][F.id] === keepId);
  cur = pos >= 0 ? pos : 0;
  page = Math.floor(cur / PS);
  render();
}

function decisionBadge(i) {
  const d = decisions[D.s[i][F.id]];
  if (!d) return null;
  const text = d[0] === 'relabel' ? 'relabel \u2192 ' + cname(d[1]) : d[0] === 'ignore' ? 'ignore class' : d[0];
  return el('span', {class: 'dec ' + d[0]}, text);
}

function card(pos) {
  const i = view[pos], r = D.s[i], st = statusOf(i);
  const c = el('div', {class: 'card' + (pos === cur ? ' cur' : '') + (st !== 'undecided' ? ' ' + st : ''),
    'data-id': r[F.id], onclick: () => { cur = pos; render(); }});
  c.append(el('div', {class: 'top'}, el('span', {}, '#' + r[F.rank] + ' \u00b7 ann ' + r[F.id]),
    r[F.flagged] ? el('span', {class: 'flag'}, 'flagged') : null));
  c.append(el('div', {class: 'tile', style: tileStyle(i, 152)}));
  if (r[F.sugg] !== r[F.given]) {
    c.append(el('div', {}, 'given ', el('span', {class: 'given'}, cname(r[F.given])), ' \u2192 ',
      el('span', {class: 'sugg'}, cname(r[F.sugg]))));
  } else {
    c.append(el('div', {}, 'given ', el('b', {}, cname(r[F.given])), ' (model agrees)'));
  }
  c.append(el('div', {}, 'quality ' + r[F.q].toFixed(3) + ' ', decisionBadge(i)));
  return c;
}

function render() {
  const pages = Math.max(1, Math.ceil(view.length / PS));
  page = Math.min(Math.max(page, 0), pages - 1);
  $('pageinfo').textContent = view.length ?
    `screen ${page + 1} of ${pages} \u00b7 ${fmt(page * PS + 1)}-${fmt(Math.min(view.length, (page + 1) * PS))} ` +
    `of ${fmt(view.length)} matching` : 'no suspect matches the filters';
  const grid = $('grid');
  grid.replaceChildren();
  for (let pos = page * PS; pos < Math.min(view.length, (page + 1) * PS); pos++) grid.append(card(pos));
  if (!view.length) grid.append(el('div', {class: 'empty'}, 'Nothing to show: change the filters.'));
  renderDetail();
  renderCounts();
}

function renderCounts() {
  const n = {keep: 0, relabel: 0, ignore: 0, drop: 0};
  let decided = 0;
  for (const d of Object.values(decisions)) { n[d[0]]++; decided++; }
  $('counts').textContent = `decided ${fmt(decided)} of ${fmt(N)} \u00b7 keep ${fmt(n.keep)} \u00b7 ` +
    `relabel ${fmt(n.relabel)} \u00b7 ignore ${fmt(n.ignore)} \u00b7 drop ${fmt(n.drop)} \u00b7 ` +
    `${fmt(N - decided)} undecided`;
}

function renderDetail() {
  const box = $('detailbody');
  box.replaceChildren();
  if (!view.length) return;
  const i = view[cur], r = D.s[i], im = D.images[r[F.img]];
  box.append(el('div', {class: 'big', style: tileStyle(i, 256)}));
  box.append(el('div', {}, el('b', {}, '#' + r[F.rank]), ' of ' + fmt(D.audit.n_scored) + ' \u00b7 annotation ' +
    r[F.id] + ' \u00b7 image ' + im[3]));
  box.append(el('div', {class: 'note'}, im[0]));
  box.append(el('div', {}, 'given ', el('span', {class: 'given'}, cname(r[F.given])),
    ' \u00b7 label quality ' + r[F.q].toFixed(3) + ' \u00b7 p(background) ' + r[F.bg].toFixed(2)));
  const probs = el('div', {class: 'probs'});
  const top = r[F.top];
  for (let t = 0; t < top.length; t += 2) {
    probs.append(el('div', {}, el('kbd', {}, String(t / 2 + 1)), el('span', {class: 'pn'}, cname(top[t])),
      el('span', {class: 'pb'}, el('i', {style: 'width:' + (100 * top[t + 1]).toFixed(1) + '%'})),
      (100 * top[t + 1]).toFixed(1) + '%'));
  }
  box.append(el('h2', {}, 'most probable classes'), probs);
  if (r[F.clean] >= 0) {
    const wrong = r[F.clean] !== r[F.given];
    box.append(el('div', {class: 'truth ' + (wrong ? 'bad' : 'ok')}, 'clean label in the file: ' +
      cname(r[F.clean]) + (wrong ? ' (given label is wrong)' : ' (given label is right)')));
  }
  const b = decisionBadge(i);
  box.append(el('div', {style: 'margin-top:6px'}, 'decision: ', b || el('i', {}, 'undecided')));
  const btn = (key, text, fn) => el('button', {onclick: fn}, el('kbd', {}, key), ' ' + text);
  box.append(el('div', {class: 'actions'},
    btn('k', 'keep label', () => decide('keep')),
    btn('r', 'relabel \u2192 ' + cname(r[F.sugg]), () => decide('relabel', r[F.sugg])),
    btn('c', 'relabel to\u2026', openPicker),
    btn('i', 'ignore class', () => decide('ignore')),
    btn('d', 'drop', () => decide('drop')),
    btn('u', 'clear', () => decide(null)),
    btn('f', 'whole image', openWhole),
    btn('\u2192', 'next', () => move(1))));
}

function decide(action, cls) {
  if (!view.length) return;
  const r = D.s[view[cur]];
  if (action === null) delete decisions[r[F.id]];
  else if (action === 'relabel' && cls === r[F.given]) decisions[r[F.id]] = ['keep'];
  else decisions[r[F.id]] = action === 'relabel' ? ['relabel', cls] : [action];
  save();
  if (action !== null) move(1); else render();
}

function move(step) {
  if (!view.length) return;
  cur = Math.min(Math.max(cur + step, 0), view.length - 1);
  page = Math.floor(cur / PS);
  render();
  const c = document.querySelector('.card.cur');
  if (c) c.scrollIntoView({block: 'nearest'});
}

function movePage(step) {
  if (!view.length) return;
  const pages = Math.ceil(view.length / PS);
  page = Math.min(Math.max(page + step, 0), pages - 1);
  cur = page * PS;
  render();
}

// ---- class picker (relabel to any class)
let pickItems = [], pickHi = 0;
function openPicker() {
  if (!view.length) return;
  $('pick').classList.add('open');
  $('pickq').value = '';
  fillPicker();
  $('pickq').focus();
}
function fillPicker() {
  const q = $('pickq').value.trim().toLowerCase();
  pickItems = [];
  for (let c = 0; c < K; c++) if (!q || cname(c).toLowerCase().includes(q) || String(D.classes[c].id) === q) pickItems.push(c);
  pickHi = 0;
  drawPicker();
}
function drawPicker() {
  const list = $('picklist');
  list.replaceChildren();
  pickItems.forEach((c, n) => list.append(el('div', {class: n === pickHi ? 'hi' : '', 'data-class': c,
    onclick: () => pickClass(c)}, cname(c) + '  (id ' + D.classes[c].id + ')')));
}
function pickClass(c) { closeModals(); decide('relabel', c); }
$('pickq').addEventListener('input', fillPicker);
$('pickq').addEventListener('keydown', (e) => {
  if (e.key === 'ArrowDown') { pickHi = Math.min(pickHi + 1, pickItems.length - 1); drawPicker(); e.preventDefault(); }
  else if (e.key === 'ArrowUp') { pickHi = Math.max(pickHi - 1, 0); drawPicker(); e.preventDefault(); }
  else if (e.key === 'Enter' && pickItems.length) { pickClass(pickItems[pickHi]); e.preventDefault(); }
  else if (e.key === 'Escape') { closeModals(); e.preventDefault(); }
  e.stopPropagation();
});

// ---- the whole image, with the annotation's box
function openWhole() {
  if (!view.length) return;
  const r = D.s[view[cur]], im = D.images[r[F.img]], [x, y, w, h] = r[F.bbox];
  // the path is a file name, not a URL: '#', '?' or '%' in it must not be read as URL syntax
  const img = el('img', {src: im[0].split('/').map(encodeURIComponent).join('/'), alt: 'image ' + im[3]});
  const frame = el('div', {class: 'whole'}, img);
  img.addEventListener('load', () => {
    const s = img.clientWidth / im[1];
    frame.append(el('div', {class: 'box', style: `left:${x * s - 2}px;top:${y * s - 2}px;width:${w * s + 4}px;height:${h * s + 4}px`}));
  });
  img.addEventListener('error', () => frame.replaceChildren(el('div', {class: 'empty'},
    'cannot read ' + im[0] + ' (the page links the original image; was it moved?)')));
  $('wholebody').replaceChildren(el('div', {style: 'margin-bottom:6px'}, im[0] + ' \u00b7 annotation ' + r[F.id] +
    ' (yellow box) \u00b7 Esc closes'), frame);
  $('whole').classList.add('open');
}

function closeModals() {
  for (const m of document.querySelectorAll('.modal')) m.classList.remove('open');
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();  // keys back to the page
}
const modalOpen = () => document.querySelector('.modal.open') !== null;

// ---- export
function exportDecisions() {
  const decided = [], undecided = [];
  for (const r of D.s) {
    const d = decisions[r[F.id]];
    if (!d) { undecided.push({annotation_id: r[F.id], given_category_id: D.classes[r[F.given]].id,
      suggested_category_id: D.classes[r[F.sugg]].id}); continue; }
    const e = {annotation_id: r[F.id], action: d[0], given_category_id: D.classes[r[F.given]].id};
    if (d[0] === 'relabel') e.category_id = D.classes[d[1]].id;
    decided.push(e);
  }
  const file = {format: D.decisions_format, version: 1, data: D.data, data_sha256: D.data_sha256,
    audit: D.audit, exported: new Date().toISOString(), decisions: decided, undecided: undecided};
  const blob = new Blob([JSON.stringify(file, null, 1)], {type: 'application/json'});
  const a = el('a', {href: URL.createObjectURL(blob), download: 'decisions_' + D.audit.id.slice(0, 8) + '.json'});
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  $('storage').textContent = `exported ${decided.length} decisions (${undecided.length} undecided)`;
}

// ---- side panel: filters, per-class bars, confusion picture
function fillSelect(sel, label) {
  sel.append(el('option', {value: -1}, label));
  for (let c = 0; c < K; c++) sel.append(el('option', {value: c}, cname(c)));
}
fillSelect($('fgiven'), 'any given class');
fillSelect($('fsugg'), 'any suggested class');
function readFilters() {
  const keep = view.length ? D.s[view[cur]][F.id] : undefined;
  filt.given = +$('fgiven').value; filt.sugg = +$('fsugg').value; filt.status = $('fstatus').value;
  const a = parseFloat($('fqmin').value), b = parseFloat($('fqmax').value);
  filt.qmin = isNaN(a) ? 0 : a; filt.qmax = isNaN(b) ? 1 : b;
  applyFilters(keep);
}
for (const id of ['fgiven', 'fsugg', 'fstatus', 'fqmin', 'fqmax']) $(id).addEventListener('change', readFilters);
// a chosen list entry hands the keys back to the page (arrows would otherwise change the filter)
for (const id of ['fgiven', 'fsugg', 'fstatus']) $(id).addEventListener('change', () => $(id).blur());
for (const id of ['fqmin', 'fqmax']) $(id).addEventListener('input', readFilters);
function setFilter(given, sugg) {
  $('fgiven').value = given; $('fsugg').value = sugg; readFilters();
}
$('fclear').addEventListener('click', () => {
  $('fgiven').value = -1; $('fsugg').value = -1; $('fstatus').value = 'all'; $('fqmin').value = 0; $('fqmax').value = 1;
  readFilters();
});

function drawBars() {
  const bars = $('bars'), pc = D.per_class;
  const truth = pc.length && pc[0].right !== undefined;
  const order = pc.map((_, c) => c).sort((a, b) => (pc[b].flagged / (pc[b].given || 1)) - (pc[a].flagged / (pc[a].given || 1)));
  for (const c of order) {
    const p = pc[c], track = el('div', {class: 'track'}, el('div', {class: 'fill', style: 'width:' + pct(p.flagged, p.given)}));
    if (truth && p.right_flagged) track.append(el('div', {class: 'right', style: 'width:' + pct(p.right_flagged, p.given)}));
    bars.append(el('div', {class: 'bar', title: 'show the suspects given ' + p.name, onclick: () => setFilter(c, -1)},
      el('div', {class: 'name'}, el('span', {}, p.name), el('span', {}, `${p.flagged}/${p.given} ${pct(p.flagged, p.given)}`)),
      track, truth ? el('div', {class: 'rt'}, `right labels flagged: ${p.right_flagged} of ${p.right}`) : null));
  }
  $('barnote').textContent = 'flagged / given labels of the class; click a class to filter.' + (truth ?
    ' Right labels (clean label = given) flagged (dark bar) are ones a blind repair would break.' : '');
}

function drawConfusion() {
  // drawn at its displayed size; with up to LABELLED classes the rows and columns get numbers and a legend
  const LABELLED = 20, SIDE = 228, cv = $('confusion'), m = D.confusion;
  const pad = K <= LABELLED ? 16 : 0, size = (SIDE - pad) / K;
  cv.width = SIDE; cv.height = SIDE;
  const ctx = cv.getContext('2d');
  ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, SIDE, SIDE);
  let max = 0;
  for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) if (a !== b) max = Math.max(max, m[a][b]);
  for (let a = 0; a < K; a++) for (let b = 0; b < K; b++) {
    const v = m[a][b], t = v && max ? 0.15 + 0.85 * Math.log1p(v) / Math.log1p(max) : 0;
    ctx.fillStyle = a === b ? '#e6e6e6' :
      `rgb(${255 - Math.round(t * 40)},${255 - Math.round(t * 200)},${255 - Math.round(t * 210)})`;
    ctx.fillRect(pad + b * size, pad + a * size, Math.ceil(size), Math.ceil(size));
  }
  if (pad) {
    ctx.fillStyle = '#56606a'; ctx.font = '9px sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'middle';
    for (let c = 0; c < K; c++) {
      ctx.fillText(String(c + 1), pad + (c + 0.5) * size, pad / 2);
      ctx.fillText(String(c + 1), pad / 2, pad + (c + 0.5) * size);
    }
    $('conflegend').textContent = D.classes.map((c, i) => `${i + 1} ${c.name}`).join(' \u00b7 ');
  }
  const cell = (e) => {
    const rect = cv.getBoundingClientRect(), k = SIDE / rect.width;
    return [Math.floor(((e.clientY - rect.top) * k - pad) / size), Math.floor(((e.clientX - rect.left) * k - pad) / size)];
  };
  const inside = (a, b) => a >= 0 && a < K && b >= 0 && b < K;
  cv.addEventListener('mousemove', (e) => { const [a, b] = cell(e);
    if (inside(a, b)) $('conftip').textContent = `given ${cname(a)} \u2192 suggested ${cname(b)}: ${m[a][b]}`; });
  cv.addEventListener('click', (e) => { const [a, b] = cell(e); if (inside(a, b)) setFilter(a, b); });
}

// ---- keys
document.addEventListener('keydown', (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (modalOpen()) { if (e.key === 'Escape') { closeModals(); e.preventDefault(); } return; }
  const t = e.target;
  if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT')) { if (e.key === 'Escape') t.blur(); return; }
  const r = view.length ? D.s[view[cur]] : null;
  const keys = {
    ArrowRight: () => move(1), ArrowDown: () => move(1), n: () => move(1),
    ArrowLeft: () => move(-1), ArrowUp: () => move(-1), p: () => move(-1),
    PageDown: () => movePage(1), PageUp: () => movePage(-1),
    Home: () => move(-view.length), End: () => move(view.length),
    k: () => decide('keep'), r: () => r && decide('relabel', r[F.sugg]),
    i: () => decide('ignore'), d: () => decide('drop'), u: () => decide(null), Backspace: () => decide(null),
    c: openPicker, f: openWhole, e: exportDecisions, '?': () => $('help').classList.add('open'),
  };
  for (let t2 = 1; t2 <= 3; t2++) keys[String(t2)] = () => r && r[F.top].length >= 2 * t2 && decide('relabel', r[F.top][2 * t2 - 2]);
  const fn = keys[e.key];
  if (fn) { fn(); e.preventDefault(); }
});
for (const m of document.querySelectorAll('.modal')) m.addEventListener('click', (e) => { if (e.target === m) closeModals(); });
$('export').addEventListener('click', exportDecisions);
$('helpbtn').addEventListener('click', () => $('help').classList.add('open'));

// ---- start
$('meta').textContent = `${fmt(D.audit.n_flagged)} of ${fmt(D.audit.n_scored)} annotations flagged; ` +
  `${fmt(N)} on this page. data: ${D.data} (sha256 ${D.data_sha256.slice(0, 12)}\u2026); checkpoints: ` +
  `${(D.audit.checkpoints || []).join(', ')}; audit ${D.audit.id}. Decisions are kept in this browser for this audit.`;
if (!storageOk) $('storage').textContent = 'this browser keeps no local storage for files: decisions are lost on reload';
drawBars();
drawConfusion();
applyFilters();
// "ready" once the first screen's crop sheets are decoded (the load time benchmarks/review_page.py measures)
const first = new Set(view.slice(0, PS).map((i) => Math.floor(i / D.tiles.per_sheet)));
Promise.all([...first].map((s) => { const im = new Image();
  im.src = D.tiles.prefix + String(s).padStart(5, '0') + '.jpg'; return im.decode().catch(() => null); }))
  .then(() => { window.reviewReadyMs = performance.now(); document.documentElement.dataset.ready = '1'; });
"""

BODY = """
<header><h1>noisyseg label review</h1><div class="counts" id="counts"></div>
<span id="storage" class="note" style="color:#ffd54a"></span>
<button id="helpbtn" title="keys (?)">keys ?</button><button id="export" title="export the decisions (e)">export decisions</button></header>
<div class="layout">
<aside>
<h2>filter</h2>
<label for="fgiven">given class</label><select id="fgiven"></select>
<label for="fsugg">suggested class</label><select id="fsugg"></select>
<label>label quality (p of the given class)</label>
<div class="range"><input id="fqmin" type="number" min="0" max="1" step="0.05" value="0" aria-label="minimum label quality">
<input id="fqmax" type="number" min="0" max="1" step="0.05" value="1" aria-label="maximum label quality"></div>
<label for="fstatus">decision</label><select id="fstatus">
<option value="all">all</option><option value="undecided">undecided</option><option value="decided">decided</option>
<option value="keep">keep</option><option value="relabel">relabel</option><option value="ignore">ignore</option>
<option value="drop">drop</option></select>
<button class="clear" id="fclear">clear filters</button>
<h2>flagged per given class</h2><div class="bars" id="bars"></div><div class="note" id="barnote"></div>
<h2>flagged: given \u2192 suggested</h2>
<canvas id="confusion" title="rows: given class, columns: suggested class; click a cell to filter"></canvas>
<div id="conftip" class="note">rows: given, columns: suggested; darker = more. Click a cell to filter.</div>
<div id="conflegend" class="note"></div>
<h2>audit</h2><div id="meta" class="note"></div>
</aside>
<main><div class="pager"><button id="prevpage" title="PageUp">\u2039</button><button id="nextpage" title="PageDown">\u203a</button>
<span id="pageinfo"></span></div><div class="grid" id="grid"></div></main>
<section id="detail"><h2>selected</h2><div id="detailbody"></div></section>
</div>
<div class="modal" id="pick"><div class="box"><b>relabel to</b> (type to filter, \u2191\u2193, Enter; Esc cancels)
<input id="pickq" autocomplete="off" aria-label="class name"><div id="picklist"></div></div></div>
<div class="modal" id="whole"><div class="box" id="wholebody"></div></div>
<div class="modal" id="help"><div class="box"><b>keys</b><table class="keys">
<tr><td><kbd>\u2192</kbd> <kbd>\u2193</kbd> <kbd>n</kbd></td><td>next suspect</td></tr>
<tr><td><kbd>\u2190</kbd> <kbd>\u2191</kbd> <kbd>p</kbd></td><td>previous suspect</td></tr>
<tr><td><kbd>PageDown</kbd> <kbd>PageUp</kbd></td><td>next / previous screen</td></tr>
<tr><td><kbd>k</kbd></td><td>keep the given label</td></tr>
<tr><td><kbd>r</kbd></td><td>relabel to the suggested class</td></tr>
<tr><td><kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd></td><td>relabel to the 1st / 2nd / 3rd most probable class</td></tr>
<tr><td><kbd>c</kbd></td><td>relabel to any class (a list to type in)</td></tr>
<tr><td><kbd>i</kbd></td><td>ignore its class (keep the object, no class supervision)</td></tr>
<tr><td><kbd>d</kbd></td><td>drop the annotation</td></tr>
<tr><td><kbd>u</kbd> <kbd>Backspace</kbd></td><td>clear the decision</td></tr>
<tr><td><kbd>f</kbd></td><td>the whole image</td></tr>
<tr><td><kbd>e</kbd></td><td>export the decisions file</td></tr>
<tr><td><kbd>Esc</kbd></td><td>close a window</td></tr></table>
<p class="note">A decision moves on to the next suspect. Decisions are kept in this browser (local storage) for this
audit; export them and run <code>noisyseg apply-decisions</code>.</p></div></div>
"""

PAGER_JS = """
document.getElementById('prevpage').addEventListener('click', () => movePage(-1));
document.getElementById('nextpage').addEventListener('click', () => movePage(1));
"""


def _script_json(data: Any) -> str:
    """JSON that cannot end its <script> element early: every '<' becomes \\u003c (still the same JSON)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def render(data: dict[str, Any]) -> str:
    """The whole review.html for the page ``data`` (see :func:`noisyseg.audit.review.page_data`)."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<title>noisyseg label review</title><style>" + CSS + "</style></head><body>" + BODY +
            "<script id='audit-data' type='application/json'>" + _script_json(data) + "</script>"
            "<script>" + JS + PAGER_JS + "</script></body></html>")
