import { csrf } from './common.js';

document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = document.getElementById('login-error');
  out.textContent = '';
  const res = await fetch('/api/login', {
    method: 'POST', credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf },
    body: JSON.stringify({ secret: document.getElementById('secret').value }),
  });
  if (res.ok) { location.href = '/'; return; }
  out.textContent = res.status === 403 ? 'The login form expired: reload the page.' : 'Wrong password or token.';
});
