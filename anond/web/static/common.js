// Shared by the pages: the CSRF token of this session and JSON requests.
export const csrf = document.querySelector('meta[name="csrf"]').content;

export async function api(method, url, body) {
  const init = { method, headers: { 'X-CSRF-Token': csrf }, credentials: 'same-origin' };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  if (res.status === 401) { location.href = '/login'; throw new Error('login required'); }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  if (!res.ok) {
    const err = new Error((data && data.error) || `${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'text') node.textContent = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

export function counts(masked) {
  const parts = Object.entries(masked || {}).map(([k, v]) => `${v} ${k}`);
  return parts.length ? parts.join(', ') : 'none';
}
