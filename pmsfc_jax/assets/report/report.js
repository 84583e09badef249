// The batch job's report page (pmsfc_jax/jobs/invert/report.py): counts, metric means and a sortable,
// paged table of every image, from the JSON in #report-data. No network, no library.
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var INF = 1e308;
  // Column: key, title, kind ('img' | 'text' | 'num'), digits, whether lower is better.
  var COLUMNS = [
    ['input', 'input', 'img'],
    ['result', 'result', 'img'],
    ['name', 'name', 'text'],
    ['status', 'status', 'text'],
    ['psnr', 'PSNR (dB)', 'num', 2],
    ['ssim', 'SSIM', 'num', 4],
    ['lpips', 'LPIPS', 'num', 4],
    ['loss', 'loss', 'num', 5],
    ['steps', 'steps', 'num', 0],
    ['seconds', 'seconds', 'num', 2],
    ['faces', 'faces', 'num', 0],
    ['error', 'error', 'text']
  ].filter(function (c) {
    // A metric column only when some row has it (LPIPS only with --config.job.lpips, faces only when aligned).
    return c[2] !== 'num' || data.rows.some(function (r) { return r[c[0]] !== null && r[c[0]] !== undefined; });
  });
  var state = {key: null, dir: 1, page: 0, size: 50};

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return '';
    return v >= INF ? 'inf' : Number(v).toFixed(digits);
  }
  function absent(v) { return v === null || v === undefined; }

  // Worst first: failed images, then increasing PSNR (absent PSNR first), then name.
  function worstFirst(a, b) {
    if (a.status !== b.status) return a.status === 'ok' ? 1 : -1;
    if (absent(a.psnr) !== absent(b.psnr)) return absent(a.psnr) ? -1 : 1;
    if (!absent(a.psnr) && a.psnr !== b.psnr) return a.psnr - b.psnr;
    return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
  }
  function byColumn(key, dir) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (absent(x) !== absent(y)) return absent(x) ? 1 : -1;  // absent values last, either direction
      if (!absent(x) && x !== y) return (typeof x === 'number' ? x - y : String(x) < String(y) ? -1 : 1) * dir;
      return worstFirst(a, b);
    };
  }
  function sorted() {
    return data.rows.slice().sort(state.key === null ? worstFirst : byColumn(state.key, state.dir));
  }

  function renderCounts() {
    var box = document.getElementById('counts');
    ['total', 'ok', 'error', 'pending'].forEach(function (k) {
      var span = el('span', {'class': 'count count-' + k, id: 'count-' + k});
      span.appendChild(el('b', {}, String(data.counts[k])));
      span.appendChild(document.createTextNode(' ' + (k === 'error' ? 'failed' : k)));
      box.appendChild(span);
    });
  }
  function renderStats() {
    var box = document.getElementById('stats');
    var table = el('table', {id: 'stats-table'});
    var head = el('tr');
    ['metric (images ok)', 'mean ± sd', 'n'].forEach(function (t) { head.appendChild(el('th', {}, t)); });
    table.appendChild(head);
    COLUMNS.forEach(function (c) {
      var s = data.stats[c[0]];
      if (c[2] !== 'num' || !s) return;
      var tr = el('tr', {id: 'stat-' + c[0]});
      tr.appendChild(el('td', {}, c[1]));
      var text = s.mean === null ? 'inf' : fmt(s.mean, c[3] + 1) + ' ± ' + fmt(s.sd, c[3] + 1);
      tr.appendChild(el('td', {}, text + (s.infinite ? ' (+' + s.infinite + ' inf)' : '')));
      tr.appendChild(el('td', {}, String(s.n + s.infinite)));
      table.appendChild(tr);
    });
    box.appendChild(table);
  }
  function renderHead() {
    var tr = el('tr');
    COLUMNS.forEach(function (c) {
      var th = el('th', {'data-key': c[0]}, c[1]);
      if (c[2] !== 'img') {
        th.className = 'sortable';
        th.setAttribute('aria-sort', state.key !== c[0] ? 'none' : state.dir > 0 ? 'ascending' : 'descending');
        th.addEventListener('click', function () {
          state.dir = state.key === c[0] ? -state.dir : 1;
          state.key = c[0];
          state.page = 0;
          render();
        });
      }
      tr.appendChild(th);
    });
    var thead = document.querySelector('#rows thead');
    thead.textContent = '';
    thead.appendChild(tr);
  }
  function renderBody() {
    var rows = sorted();
    var pages = Math.max(1, Math.ceil(rows.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    var tbody = document.querySelector('#rows tbody');
    tbody.textContent = '';
    rows.slice(state.page * state.size, (state.page + 1) * state.size).forEach(function (r) {
      var tr = el('tr', {'class': 'row-' + r.status, 'data-name': r.name});
      COLUMNS.forEach(function (c) {
        var td = el('td', {'class': 'col-' + c[0]});
        if (c[2] === 'img') {
          if (r[c[0]]) {
            var img = el('img', {src: r[c[0]], loading: 'lazy', alt: c[0] + ' of ' + r.name});
            img.addEventListener('error', function () { td.textContent = 'not shown'; });
            td.appendChild(img);
          }
        } else {
          td.textContent = c[2] === 'num' ? fmt(r[c[0]], c[3]) : r[c[0]] || '';
        }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    renderPager(pages, rows.length);
  }
  function renderPager(pages, n) {
    var box = document.getElementById('pager');
    box.textContent = '';
    var prev = el('button', {id: 'prev'}, '‹ previous');
    var next = el('button', {id: 'next'}, 'next ›');
    prev.disabled = state.page === 0;
    next.disabled = state.page >= pages - 1;
    prev.addEventListener('click', function () { state.page -= 1; renderBody(); });
    next.addEventListener('click', function () { state.page += 1; renderBody(); });
    var size = el('select', {id: 'page-size'});
    [25, 50, 100, 500].forEach(function (s) {
      var o = el('option', {value: String(s)}, s + ' rows');
      if (s === state.size) o.selected = true;
      size.appendChild(o);
    });
    size.addEventListener('change', function () { state.size = Number(size.value); state.page = 0; renderBody(); });
    box.appendChild(prev);
    box.appendChild(el('span', {id: 'page'}, 'page ' + (state.page + 1) + ' of ' + pages + ' (' + n + ' images)'));
    box.appendChild(next);
    box.appendChild(size);
  }
  function render() { renderHead(); renderBody(); }

  renderCounts();
  renderStats();
  render();
  document.body.setAttribute('data-ready', 'true');
})();
