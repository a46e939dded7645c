import { useState } from "preact/hooks";
import { can, get, post, put } from "../api.js";
import { Empty, ErrorBox, Field, Loading, useLoad, when, Table } from "../ui.jsx";

const ROLES = ["admin", "developer", "analyst", "viewer"];

export function Users() {
  const [page, setPage] = useState(1);
  const list = useLoad(() => (can("admin") ? get("/v1/users", { page, size: 50 }) : Promise.resolve(null)), [page]);
  const [form, setForm] = useState({ username: "", password: "", role: "developer" });
  const [error, setError] = useState(null);
  if (!can("admin")) return <Empty title="Only admins manage users." />;
  async function create(e) {
    e.preventDefault();
    setError(null);
    try {
      await post("/v1/users", form);
      setForm({ username: "", password: "", role: form.role });
      list.reload();
    } catch (err) {
      setError(err);
    }
  }
  async function change(user, body) {
    setError(null);
    try {
      await put(`/v1/users/${user.id}`, body);
      list.reload();
    } catch (err) {
      setError(err);
    }
  }
  return (
    <section class="stack">
      <h1>Users</h1>
      <form class="card stack" onSubmit={create}>
        <h2 class="h3">New user</h2>
        <div class="row">
          <Field label="Username" id="user-name">
            <input
              id="user-name"
              required
              pattern="[A-Za-z0-9_.\-]{1,64}"
              value={form.username}
              onInput={(e) => setForm({ ...form, username: e.currentTarget.value })}
            />
          </Field>
          <Field label="Password" id="user-password" hint="8 characters or more.">
            <input
              id="user-password"
              type="password"
              autocomplete="new-password"
              required
              minLength={8}
              aria-describedby="user-password-hint"
              value={form.password}
              onInput={(e) => setForm({ ...form, password: e.currentTarget.value })}
            />
          </Field>
          <Field label="Role" id="user-role">
            <select
              id="user-role"
              value={form.role}
              onChange={(e) => setForm({ ...form, role: e.currentTarget.value })}
            >
              {ROLES.map((r) => (
                <option value={r}>{r}</option>
              ))}
            </select>
          </Field>
        </div>
        <div>
          <button type="submit">Create user</button>
        </div>
      </form>
      <ErrorBox error={error ?? list.error} />
      {!list.data && !list.error && <Loading />}
      {list.data && (
        <Table columns={["User", "Role", "Last login", ""]} pagination={list.data.pagination} go={setPage}>
          {list.data.data.map((u) => (
            <tr>
              <td>
                {u.username} {u.disabled && <span class="badge status-failed">disabled</span>}
              </td>
              <td>
                <label class="visually-hidden" for={`role-${u.id}`}>
                  Role of {u.username}
                </label>
                <select
                  id={`role-${u.id}`}
                  value={u.role}
                  onChange={(e) => {
                    // Arrow keys on a closed select fire a change per step: ask first.
                    const role = e.currentTarget.value;
                    if (window.confirm(`Make ${u.username} ${role === "admin" ? "an" : "a"} ${role}?`))
                      change(u, { role });
                    else e.currentTarget.value = u.role;
                  }}
                >
                  {ROLES.map((r) => (
                    <option value={r}>{r}</option>
                  ))}
                </select>
              </td>
              <td>{when(u.last_login_at)}</td>
              <td>
                <button type="button" class="secondary" onClick={() => change(u, { disabled: !u.disabled })}>
                  {u.disabled ? "Enable" : "Disable"}
                </button>
              </td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  );
}
