// The demo storefront: live quantities over server-sent events, "Buy one" through the public API
// (reserve, then commit). Vanilla JS, no dependencies.
(function () {
  "use strict";
  const root = document.getElementById("storefront");
  const statusEl = document.getElementById("status");
  const logEl = document.getElementById("log");
  const skus = Array.from(document.querySelectorAll("[data-sku]")).map((el) => el.dataset.sku);
  let readKey = root.dataset.readKey || sessionStorage.getItem("stockline.readKey") || "";
  let writeKey = root.dataset.writeKey || sessionStorage.getItem("stockline.writeKey") || "";
  let source = null;

  function setStatus(text, kind) {
    statusEl.textContent = text;
    statusEl.className = "status " + (kind || "");
  }

  function log(text, isError) {
    const item = document.createElement("li");
    item.textContent = new Date().toLocaleTimeString() + "  " + text;
    if (isError) item.className = "error";
    logEl.prepend(item);
    while (logEl.children.length > 20) logEl.lastChild.remove();
  }

  function card(code) {
    return Array.from(document.querySelectorAll("[data-sku]")).find((el) => el.dataset.sku === code);
  }

  function show(stock) {
    const el = card(stock.sku);
    if (!el) return;
    const field = (name) => el.querySelector('[data-field="' + name + '"]');
    const before = field("available").textContent;
    field("available").textContent = String(stock.available);
    field("on_hand").textContent = String(stock.on_hand);
    field("reserved").textContent = String(stock.reserved);
    const list = field("locations");
    list.replaceChildren(...stock.locations.map((loc) => {
      const item = document.createElement("li");
      item.textContent = loc.location + ": " + loc.available + " available";
      return item;
    }));
    el.classList.toggle("soldout", stock.available === 0);
    if (before !== "…" && before !== String(stock.available)) {
      el.classList.add("changed");
      setTimeout(() => el.classList.remove("changed"), 50);
    }
  }

  function connect() {
    if (!readKey || skus.length === 0) return;
    if (source) source.close();
    const params = new URLSearchParams();
    skus.forEach((code) => params.append("sku", code));
    params.set("key", readKey);
    params.set("initial", "1"); // current quantities first, then every change
    source = new EventSource("/api/v1/stream/stock/?" + params.toString());
    source.addEventListener("stock", (event) => show(JSON.parse(event.data)));
    source.onopen = () => setStatus("live", "live");
    source.onerror = () => {
      // The browser reconnects by itself (with Last-Event-ID) unless the server refused us.
      setStatus(source.readyState === EventSource.CLOSED ? "refused (check the key)" : "reconnecting…", "down");
    };
  }

  function idempotencyKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16)); // plain-HTTP origins have no randomUUID
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: {
        "Authorization": "Bearer " + writeKey,
        "Content-Type": "application/json",
        "Idempotency-Key": idempotencyKey(),
      },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || data.error || response.statusText);
    return data;
  }

  async function buy(code, button) {
    if (!writeKey) {
      log("No reservations key: paste one above.", true);
      return;
    }
    button.disabled = true;
    try {
      const reservation = await post("/api/v1/reservations/", {
        lines: [{ sku: code, quantity: 1 }], ttl_seconds: 300,
      });
      await post("/api/v1/reservations/" + reservation.id + "/commit/", {});
      log("Bought one " + code + " (reservation " + reservation.id.slice(0, 8) + "…)");
    } catch (error) {
      log("Could not buy " + code + ": " + error.message, true);
    } finally {
      button.disabled = false;
    }
  }

  document.querySelectorAll("[data-buy]").forEach((button) => {
    button.addEventListener("click", () => buy(button.dataset.buy, button));
  });

  const form = document.getElementById("keys");
  if (form) {
    if (readKey) form.read.value = readKey;
    if (writeKey) form.write.value = writeKey;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      readKey = form.read.value.trim();
      writeKey = form.write.value.trim();
      sessionStorage.setItem("stockline.readKey", readKey);
      sessionStorage.setItem("stockline.writeKey", writeKey);
      connect();
    });
  }
  if (!readKey) setStatus("no key", "down");
  connect();
})();
