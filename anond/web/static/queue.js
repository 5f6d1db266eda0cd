import { api, el, counts } from './common.js';

function duration(row) {
  if (row.kind !== 'video' || row.duration_s == null) return '—';
  const s = Math.round(row.duration_s);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

async function refresh() {
  const { jobs } = await api('GET', '/api/jobs');
  const body = document.querySelector('#queue tbody');
  body.replaceChildren(...jobs.map((j) => {
    const link = el('a', { href: `/jobs/${encodeURIComponent(j.job)}`, class: 'job-link', text: j.job });
    return el('tr', { 'data-job': j.job },
      el('td', {}, link), el('td', { text: j.inbox || '' }), el('td', { text: j.name || '' }),
      el('td', { text: j.kind || '' }), el('td', { text: duration(j) }),
      el('td', { text: counts(j.masked) }), el('td', { text: String(j.verify_fixes || 0) }),
      el('td', { text: j.ready ? 'ready' : 'processing' }));
  }));
  document.getElementById('empty').hidden = jobs.length > 0;
  document.getElementById('queue-count').textContent = `${jobs.length} waiting`;
}

document.getElementById('logout').addEventListener('click', async () => {
  await api('POST', '/api/logout');
  location.href = '/login';
});
refresh();
setInterval(refresh, 3000);
