/* Tally's loyalty widget: a <tally-loyalty> element drawing a launcher and a panel inside its own
 * Shadow DOM, so the store's CSS cannot reach it and its CSS cannot reach the store.
 *
 * Plain JavaScript served as it is (no framework, no build step). Put it on a page with
 *   <script src="https://TALLY/storefront/widget.js" data-widget-id="wid_..." async defer></script>
 * (plus data-customer-id, data-customer-email and data-customer-signature for a signed-in shopper,
 * or data-token for a headless store's short-lived JWT), or write <tally-loyalty data-widget-id=...>
 * yourself. data-mode="page" draws the panel in the page instead of behind a launcher (the hosted
 * loyalty page); data-mode="preview" draws both, for the admin's preview, which also passes a
 * draft look as data-appearance (JSON).
 */
(() => {
  "use strict";
  if (!window.customElements || customElements.get("tally-loyalty")) return;

  const script = document.currentScript;
  // The Tally server is wherever this file came from, unless the element names one (data-api).
  const TALLY = script && script.src ? new URL(script.src, location.href).origin : location.origin;
  const COLOUR = /^#[0-9a-fA-F]{6}$/;
  const REQUEST_TIMEOUT_MS = 20000;
  const DEFAULT_LOOK = {
    primary_colour: "#5b3df5",
    text_colour: "#ffffff",
    launcher_label: "Rewards",
    title: "Our rewards program",
    guest_message: "Join to earn points on every order.",
    position: "right",
  };
  const FOCUSABLE =
    'a[href],button:not([disabled]),input:not([disabled]),select:not([disabled]),[tabindex="0"]';

  // Lengths are in px, never rem or em of the page: the store's `html { font-size }` must not
  // scale the widget, and nothing is inherited from the host (the store may style the host).
  const STYLE = `
:host{all:initial;display:block}
.tl{all:initial;display:block;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2328;-webkit-text-size-adjust:100%}
:where(.tl *),:where(.tl *)::before,:where(.tl *)::after{box-sizing:border-box;font:inherit;color:inherit;letter-spacing:normal;text-transform:none}
[hidden]{display:none!important}
.panel:focus{outline:none}
button,input,a{font:inherit}
button{display:inline-flex;align-items:center;justify-content:center;gap:6px;min-height:40px;padding:8px 14px;border:0;border-radius:8px;cursor:pointer;background:var(--tl-primary);color:var(--tl-on-primary);font-weight:600;visibility:visible;opacity:1}
button[disabled]{opacity:.6;cursor:progress}
button.secondary{background:#eef0f3;color:#1f2328}
button:focus-visible,a:focus-visible,input:focus-visible,[tabindex]:focus-visible{outline:3px solid var(--tl-ring);outline-offset:2px}
a{color:var(--tl-link);text-decoration:underline}
h2,h3,p,ul,li{margin:0;padding:0}
ul{list-style:none}
.launcher{position:fixed;bottom:20px;z-index:2147483000;border-radius:999px;padding:12px 20px;box-shadow:0 6px 20px rgba(0,0,0,.25)}
.right .launcher{right:20px}.left .launcher{left:20px}
.panel{position:fixed;bottom:84px;z-index:2147483001;width:380px;max-width:calc(100vw - 24px);max-height:calc(100vh - 104px);overflow:auto;background:#fff;border-radius:14px;box-shadow:0 12px 40px rgba(0,0,0,.3);display:flex;flex-direction:column}
.right .panel{right:20px}.left .panel{left:20px}
@media (max-width:480px){.panel{left:12px!important;right:12px!important;width:auto;max-width:none;bottom:76px}.launcher{bottom:12px}.right .launcher{right:12px}.left .launcher{left:12px}}
.head{display:flex;align-items:center;justify-content:space-between;gap:8px;padding:16px 18px;background:var(--tl-primary);color:var(--tl-on-primary);border-radius:14px 14px 0 0}
.head h2{font-size:18px;font-weight:700}
.close{background:transparent;color:var(--tl-on-primary);min-width:40px;padding:4px 10px;font-size:22px;line-height:1}
.body{padding:14px 18px 18px;display:grid;gap:18px}
section h3{font-size:16px;font-weight:700;margin-bottom:8px}
.items li{display:flex;justify-content:space-between;align-items:center;gap:10px;padding:8px 0;border-top:1px solid #e6e8eb}
.items li:first-child{border-top:0}
.items .what{display:grid;gap:2px;min-width:0}
.items .what span:first-child{font-weight:600}
.muted{color:#57606a;font-size:13px}
.pts{font-weight:700;white-space:nowrap}
.balance{font-size:34px;font-weight:800;line-height:1.1}
.bar{height:10px;background:#e6e8eb;border-radius:6px;overflow:hidden;margin:6px 0 4px}
.bar span{display:block;height:100%;background:var(--tl-primary);border-radius:6px}
.note{padding:10px 12px;border-radius:8px;background:#f3f4f6}
.problem{background:#fff1f0;color:#8a1c12;border:1px solid #f4b8b2}
.code{display:flex;gap:8px;align-items:center;flex-wrap:wrap;margin-top:6px;padding:8px 10px;border:2px dashed var(--tl-primary);border-radius:8px}
.code strong{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:16px;word-break:break-all}
.share{display:flex;flex-wrap:wrap;gap:10px;margin-top:8px}
.row{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
input{min-height:40px;padding:6px 10px;border:1px solid #8c959f;border-radius:8px;background:#fff;color:#1f2328;min-width:0;flex:1}
.status{min-height:0;padding:0 18px 12px}
.status:empty{display:none}
.mode-page .panel,.mode-preview .panel{position:static;width:auto;max-width:760px;max-height:none;margin:0 auto;box-shadow:0 2px 14px rgba(0,0,0,.12)}
.mode-page .launcher{display:none}
.mode-preview .launcher{position:static;margin:0 0 14px auto;display:flex}
.mode-preview.left .launcher{margin:0 auto 14px 0}
.mode-preview .panel{max-width:400px;margin:0 0 0 auto}.mode-preview.left .panel{margin:0 auto 0 0}
@media (min-width:760px){.mode-page .body{grid-template-columns:1fr 1fr}.mode-page .wide,.mode-page .problem{grid-column:1/-1}}
`;

  // ------------------------------------------------------------------------- small helpers

  // Elements are built with textContent and setAttribute only: nothing from the API (reward
  // names, codes, the merchant's texts) is ever parsed as HTML.
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "text") el.textContent = String(value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  function luminance(hex) {
    const channel = (i) => {
      const v = parseInt(hex.slice(i, i + 2), 16) / 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    };
    return 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
  }

  function contrast(a, b) {
    const [x, y] = [luminance(a), luminance(b)];
    return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05);
  }

  // The merchant picks the colours; WCAG AA (4.5:1) is kept whatever they pick, by falling back
  // to black or white text where their pair would be hard to read.
  function readable(text, background) {
    if (contrast(text, background) >= 4.5) return text;
    return contrast("#ffffff", background) >= contrast("#000000", background) ? "#ffffff" : "#000000";
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const number = (n) => Number(n || 0).toLocaleString();
  const points = (n) => `${number(n)} ${Math.abs(Number(n)) === 1 ? "point" : "points"}`;
  function day(value) {
    if (!value) return "";
    const parsed = new Date(value.length === 10 ? `${value}T00:00:00` : value);
    return Number.isNaN(parsed.getTime()) ? value : parsed.toLocaleDateString();
  }

  function whenLoaded(run) {
    // Fetch only after the page has loaded, so the widget never competes with the store's own
    // first requests.
    if (document.readyState === "complete") run();
    else window.addEventListener("load", run, { once: true });
  }

  function problemText(answer) {
    if (answer.status === 0) return "We could not reach the rewards service. Please try again.";
    if (answer.status === 429) {
      const wait = answer.retryAfter ? ` in ${answer.retryAfter} seconds` : " shortly";
      return `Too many requests. Please try again${wait}.`;
    }
    const body = answer.body || {};
    return body.detail || body.title || "Something went wrong. Please try again.";
  }

  // ------------------------------------------------------------------------- the element

  class TallyLoyalty extends HTMLElement {
    static get observedAttributes() {
      return [
        "data-widget-id",
        "data-customer-id",
        "data-customer-email",
        "data-customer-signature",
        "data-token",
        "data-appearance",
      ];
    }

    constructor() {
      super();
      this.attachShadow({ mode: "open" });
      this.loads = 0;
      this.open = false;
      this.program = null;
      this.me = null;
      this.activity = [];
      this.signInProblem = false;
      this.meProblem = "";
      // reward id -> {key, pending, code, problem}: one Idempotency-Key per intent to redeem,
      // kept until the server gives a definite answer, so a retry cannot spend twice.
      this.redeeming = new Map();
      this.claiming = new Map();
      this.birthdayProblem = "";
    }

    connectedCallback() {
      if (!this.root) this.build();
      whenLoaded(() => this.load());
    }

    attributeChangedCallback(name, before, after) {
      if (!this.root || before === after) return;
      if (name === "data-appearance") this.render();
      else this.load();
    }

    get mode() {
      const mode = this.dataset.mode;
      return mode === "page" || mode === "preview" ? mode : "launcher";
    }

    get base() {
      return (this.dataset.api || TALLY).replace(/\/+$/, "");
    }

    identity() {
      const d = this.dataset;
      const token = d.token || this.linkedToken();
      if (token) return { Authorization: `Bearer ${token}` };
      if (d.customerId && d.customerSignature) {
        return {
          "X-Tally-Customer-Id": d.customerId,
          "X-Tally-Customer-Email": d.customerEmail || "",
          "X-Tally-Signature": d.customerSignature,
        };
      }
      return null;
    }

    // A store can link a signed-in shopper to the hosted page as /p/{id}#tally-token=<JWT>:
    // the fragment never reaches a server or its logs, and the token lives minutes. The
    // never-expiring HMAC form is not taken from a URL, where it could be shared.
    linkedToken() {
      if (this.mode !== "page" || this.dataset.customerId) return "";
      const found = /(?:^#|&)tally-token=([^&]+)/.exec(location.hash);
      if (found) {
        this.hashToken = decodeURIComponent(found[1]);
        // Out of the address bar, so a bookmark or a shared link does not carry it.
        history.replaceState(null, "", location.pathname + location.search);
      }
      return this.hashToken || "";
    }

    async call(method, path, body, extra) {
      const headers = Object.assign({ Accept: "application/json" }, extra || {});
      if (path.startsWith("/me")) Object.assign(headers, this.identity() || {});
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const url = `${this.base}/storefront/v1/${encodeURIComponent(this.dataset.widgetId || "")}${path}`;
      let response;
      try {
        response = await fetch(url, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          mode: "cors",
          credentials: "omit",
          // A request that hangs ends as "no answer", which keeps a redemption's key for retry.
          signal: window.AbortSignal && AbortSignal.timeout ? AbortSignal.timeout(REQUEST_TIMEOUT_MS) : undefined,
        });
      } catch (error) {
        // A network failure or a CORS refusal: the browser tells the page nothing more.
        return { ok: false, status: 0, body: null };
      }
      let parsed = null;
      try {
        parsed = await response.json();
      } catch (error) {
        parsed = null;
      }
      return {
        ok: response.ok,
        status: response.status,
        body: parsed,
        retryAfter: response.headers.get("Retry-After"),
      };
    }

    setState(state) {
      this.setAttribute("data-state", state);
    }

    // ----------------------------------------------------------------------- loading

    async load() {
      if (!this.isConnected || !this.dataset.widgetId) return;
      const load = ++this.loads;
      this.setState("loading");
      const program = await this.call("GET", "/program");
      if (load !== this.loads) return;
      if (!program.ok || !program.body) {
        this.program = null;
        this.setState("unavailable");
        this.render();
        return;
      }
      this.program = program.body;
      this.me = null;
      this.signInProblem = false;
      if (this.identity()) await this.loadMe(load);
      if (load !== this.loads) return;
      this.setState(this.signInProblem ? "signin-problem" : this.me ? "signed-in" : "guest");
      this.render();
    }

    async loadMe(load) {
      const [me, activity] = await Promise.all([
        this.call("GET", "/me"),
        this.call("GET", "/me/activity?limit=20&offset=0"),
      ]);
      if (load !== undefined && load !== this.loads) return;
      this.meProblem = "";
      if (me.status === 401) {
        this.refused();
      } else if (me.ok) {
        this.me = me.body;
        this.activity = activity.ok && activity.body ? activity.body.items || [] : [];
      } else {
        this.meProblem = problemText(me);
      }
    }

    refused() {
      this.signInProblem = true;
      this.me = null;
      this.setState("signin-problem");
      // A headless store can listen for this, mint a fresh token and set data-token again.
      this.dispatchEvent(new CustomEvent("tally:signin-problem", { bubbles: true, composed: true }));
    }

    look() {
      const look = Object.assign({}, DEFAULT_LOOK, (this.program && this.program.appearance) || {});
      if (this.dataset.appearance) {
        try {
          Object.assign(look, JSON.parse(this.dataset.appearance));
        } catch (error) {
          // A draft that is not JSON changes nothing.
        }
      }
      if (!COLOUR.test(look.primary_colour)) look.primary_colour = DEFAULT_LOOK.primary_colour;
      if (!COLOUR.test(look.text_colour)) look.text_colour = DEFAULT_LOOK.text_colour;
      return look;
    }

    // ----------------------------------------------------------------------- the frame

    build() {
      const shadow = this.shadowRoot;
      if ("adoptedStyleSheets" in shadow && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
        // A constructed sheet also works under a store's strict style-src policy, where a
        // <style> element would be refused.
        TallyLoyalty.sheet = TallyLoyalty.sheet || new CSSStyleSheet();
        if (!TallyLoyalty.sheet.cssRules.length) TallyLoyalty.sheet.replaceSync(STYLE);
        shadow.adoptedStyleSheets = [TallyLoyalty.sheet];
      } else {
        shadow.append(h("style", { text: STYLE }));
      }
      const dialog = this.mode === "launcher";
      this.launcher = h("button", {
        type: "button",
        class: "launcher",
        "aria-haspopup": "dialog",
        "aria-expanded": "false",
        "aria-controls": "tl-panel",
        onclick: () => (this.open ? this.close() : this.show()),
      });
      this.heading = h("h2", { id: "tl-title" });
      this.closer = dialog
        ? h("button", { type: "button", class: "close", "aria-label": "Close", text: "\u00d7", onclick: () => this.close() })
        : null;
      this.body = h("div", { class: "body" });
      this.status = h("p", { class: "status", role: "status", "aria-live": "polite" });
      this.panel = h(
        "div",
        {
          id: "tl-panel",
          class: "panel",
          role: dialog ? "dialog" : "region",
          "aria-modal": dialog ? "true" : null,
          "aria-labelledby": "tl-title",
          hidden: dialog,
          tabindex: "-1",
          onkeydown: (event) => this.onKey(event),
          onfocusin: (event) => {
            const key = event.target.getAttribute && event.target.getAttribute("data-focus");
            if (key) this.lastFocus = key;
          },
        },
        h("div", { class: "head" }, this.heading, this.closer),
        this.body,
        this.status
      );
      this.root = h("div", { class: `tl mode-${this.mode}`, hidden: true }, this.launcher, this.panel);
      shadow.append(this.root);
      if (this.mode === "page") window.addEventListener("hashchange", () => this.load());
    }

    show() {
      this.open = true;
      this.panel.hidden = false;
      this.launcher.setAttribute("aria-expanded", "true");
      (this.closer || this.panel).focus();
    }

    close() {
      if (this.mode !== "launcher") return;
      this.open = false;
      this.panel.hidden = true;
      this.launcher.setAttribute("aria-expanded", "false");
      this.launcher.focus();
    }

    onKey(event) {
      if (this.mode !== "launcher") return;
      if (event.key === "Escape") {
        event.preventDefault();
        this.close();
        return;
      }
      if (event.key !== "Tab") return;
      // Keep Tab and Shift+Tab inside the open panel (it is a modal dialog).
      const inside = Array.from(this.panel.querySelectorAll(FOCUSABLE)).filter((el) => el.getClientRects().length);
      if (!inside.length) return;
      const first = inside[0];
      const last = inside[inside.length - 1];
      const active = this.shadowRoot.activeElement;
      if (event.shiftKey && (active === first || !inside.includes(active))) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && active === last) {
        event.preventDefault();
        first.focus();
      }
    }

    say(message) {
      this.status.textContent = message;
    }

    // ----------------------------------------------------------------------- drawing

    render() {
      if (!this.root) return;
      const look = this.look();
      const style = this.root.style;
      style.setProperty("--tl-primary", look.primary_colour);
      style.setProperty("--tl-on-primary", readable(look.text_colour, look.primary_colour));
      style.setProperty("--tl-link", contrast(look.primary_colour, "#ffffff") >= 4.5 ? look.primary_colour : "#1f2328");
      style.setProperty("--tl-ring", look.primary_colour);
      this.root.className = `tl mode-${this.mode} ${look.position === "left" ? "left" : "right"}`;
      this.launcher.textContent = look.launcher_label;
      this.launcher.setAttribute("aria-label", `${look.launcher_label}: open the rewards panel`);
      this.heading.textContent = look.title;
      if (!this.program) {
        // Unknown widget, a store origin Tally does not allow, or Tally unreachable: a launcher
        // would open onto nothing, so only the full-page forms say so.
        this.root.hidden = this.mode === "launcher";
        this.body.replaceChildren(h("p", { class: "note", text: "The rewards program is not available right now." }));
        return;
      }
      this.root.hidden = false;
      // Re-drawing replaces the buttons: put the focus back on the one that had it (or on the
      // panel while that one is disabled, so the focus never falls out of the open dialog).
      const active = this.shadowRoot.activeElement;
      const hadFocus = active && (this.body.contains(active) || active === this.panel);
      this.body.replaceChildren(...this.sections(look));
      if (hadFocus) {
        const key = this.lastFocus ? CSS.escape(this.lastFocus) : "";
        const again = key && this.body.querySelector(`[data-focus="${key}"]:not([disabled])`);
        (again || this.panel).focus();
      }
    }

    sections(look) {
      const out = [];
      if (this.signInProblem) {
        out.push(
          h("p", { class: "note problem wide", role: "alert", "data-testid": "signin-problem" },
            "We could not confirm that you are signed in, so your points are not shown. Please sign out of the store and sign in again.")
        );
      } else if (this.meProblem) {
        out.push(h("p", { class: "note problem wide", role: "alert", text: this.meProblem }));
      }
      if (this.me) {
        out.push(this.balanceSection(), this.redeemSection(), this.tierSection(), this.referralSection());
        out.push(this.couponsSection(), this.birthdaySection(), this.earnSection(), this.activitySection());
      } else {
        out.push(h("p", { class: "note wide", "data-testid": "guest-message", text: look.guest_message }));
        out.push(this.earnSection(), this.rewardsSection(), this.tierSection(), this.referralSection());
      }
      return out.filter(Boolean);
    }

    section(label, ...kids) {
      return h("section", null, h("h3", { text: label }), ...kids);
    }

    balanceSection() {
      const c = this.me.customer;
      const expiry = c.next_expiry;
      return this.section(
        c.first_name ? `Hi ${c.first_name}` : "Your points",
        h("p", { class: "balance", "data-testid": "balance", text: number(c.points_balance) }),
        h("p", { class: "muted", text: "points to spend" }),
        expiry && h("p", { class: "muted", "data-testid": "next-expiry", text: `${points(expiry.points)} expire on ${day(expiry.date)}` })
      );
    }

    tierSection() {
      const vip = this.program.vip;
      if (!vip || !vip.enabled || !(vip.tiers || []).length) return null;
      const c = this.me && this.me.customer;
      const kids = [];
      if (c) {
        kids.push(h("p", { "data-testid": "tier", text: c.tier ? `Your tier: ${c.tier.name}` : "You have not reached a tier yet." }));
        const next = c.next_tier;
        if (next) {
          // The API gives progress in percent, 0 to 100.
          const percent = Math.max(0, Math.min(100, Math.round(Number(next.progress) || 0)));
          const fill = h("span");
          fill.style.width = `${percent}%`;
          kids.push(
            h("div", { class: "bar", role: "progressbar", "aria-label": `Progress to ${next.name}`, "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent }, fill),
            h("p", { class: "muted", "data-testid": "tier-progress", text: `${this.amount(next.remaining, vip.metric)} more to reach ${next.name}` })
          );
        }
      }
      const tiers = vip.tiers.map((tier) =>
        h("li", null,
          h("span", { class: "what" }, h("span", { text: tier.name }), this.benefits(tier.benefits)),
          h("span", { class: "pts", text: this.amount(tier.threshold, vip.metric) }))
      );
      kids.push(h("ul", { class: "items", "data-testid": "tiers" }, tiers));
      return this.section("VIP tiers", ...kids);
    }

    benefits(value) {
      if (!value || (Array.isArray(value) && !value.length)) return null;
      const text = Array.isArray(value) ? value.join(" · ") : String(value);
      return h("span", { class: "muted", text });
    }

    money(value) {
      const currency = (this.program.store && this.program.store.currency) || "USD";
      try {
        return Number(value).toLocaleString(undefined, { style: "currency", currency });
      } catch (error) {
        return `${value} ${currency}`;
      }
    }

    amount(value, metric) {
      if (metric && /spen|amount/.test(metric)) return this.money(value);
      if (metric && /order/.test(metric)) return `${number(value)} orders`;
      return points(value);
    }

    earnSection() {
      const ways = this.program.ways_to_earn || [];
      if (!ways.length) return null;
      const items = ways.map((way) => {
        const detail = way.description || "";
        const label = way.points ? points(way.points) : "";
        return h("li", null,
          h("span", { class: "what" }, h("span", { text: way.title }), detail && h("span", { class: "muted", text: detail })),
          this.me && way.claimable ? this.claimButton(way) : h("span", { class: "pts", text: label }));
      });
      return this.section("Ways to earn", h("ul", { class: "items", "data-testid": "ways-to-earn" }, items));
    }

    claimButton(way) {
      const state = this.claiming.get(way.id) || {};
      return h("button", {
        type: "button",
        "data-focus": `claim:${way.id}`,
        disabled: state.pending || state.done,
        "aria-label": `Claim ${points(way.points)} for ${way.title}`,
        text: state.done ? "Claimed" : state.pending ? "Claiming\u2026" : `Claim ${number(way.points)}`,
        onclick: () => this.claim(way),
      });
    }

    rewardsSection() {
      const rewards = this.program.rewards || [];
      if (!rewards.length) return null;
      const items = rewards.map((reward) =>
        h("li", null, this.rewardText(reward), h("span", { class: "pts", text: points(reward.points_cost) }))
      );
      return this.section("Rewards", h("ul", { class: "items", "data-testid": "rewards" }, items));
    }

    rewardText(reward) {
      const min = reward.min_order ? `On orders of ${this.money(reward.min_order)} or more` : "";
      return h("span", { class: "what" },
        h("span", { text: reward.title }),
        reward.description && h("span", { class: "muted", text: reward.description }),
        min && h("span", { class: "muted", text: min }));
    }

    redeemSection() {
      const rewards = this.program.rewards || [];
      if (!rewards.length) return null;
      const affordable = new Set(this.me.affordable_reward_ids || []);
      const items = rewards.map((reward) => {
        const state = this.redeeming.get(reward.id) || {};
        const can = affordable.has(reward.id);
        const action = can || state.pending
          ? h("button", {
              type: "button",
              "data-focus": `redeem:${reward.id}`,
              disabled: state.pending,
              "aria-label": `Redeem ${reward.title} for ${points(reward.points_cost)}`,
              text: state.pending ? "Redeeming\u2026" : state.key ? "Try again" : `Redeem ${number(reward.points_cost)}`,
              onclick: () => this.redeem(reward),
            })
          : h("span", { class: "pts muted", text: points(reward.points_cost) });
        const li = h("li", { "data-reward": reward.id }, this.rewardText(reward), action);
        const extra = [];
        if (state.code) {
          extra.push(h("div", { class: "code", "data-testid": "reward-code" },
            h("span", { text: "Your code:" }), h("strong", { text: state.code }), this.copyButton(state.code, `copy:${reward.id}`)));
        }
        if (state.problem) extra.push(h("p", { class: "note problem", role: "alert", text: state.problem }));
        return extra.length ? [li, h("li", { class: "extra" }, h("div", null, ...extra))] : li;
      });
      return this.section("Redeem your points", h("ul", { class: "items", "data-testid": "redeem" }, items));
    }

    copyButton(value, focus) {
      return h("button", {
        type: "button",
        class: "secondary",
        "data-focus": focus,
        "aria-label": `Copy ${value}`,
        text: "Copy",
        onclick: () => {
          const done = () => this.say("Copied.");
          if (navigator.clipboard) navigator.clipboard.writeText(value).then(done, () => this.say("Select the text to copy it."));
        },
      });
    }

    referralSection() {
      const offer = this.program.referrals;
      if (!offer || !offer.enabled) return null;
      const friend = offer.friend_reward;
      const friendText = friend && typeof friend === "object" ? friend.title || friend.description || "" : friend || "";
      const pitch = [
        offer.sender_points ? `Get ${points(offer.sender_points)} for each friend who orders` : "",
        friendText ? `your friend gets ${friendText}` : "",
      ].filter(Boolean).join("; ");
      const kids = [h("p", { "data-testid": "referral-offer", text: pitch ? `${pitch}.` : "Refer a friend." })];
      const referral = this.me && this.me.customer.referral;
      if (referral && referral.link) {
        const field = h("input", { type: "text", readonly: true, value: referral.link, "aria-label": "Your referral link", "data-focus": "ref-link" });
        const share = referral.share || {};
        const names = { email: "Email", facebook: "Facebook", x: "X", whatsapp: "WhatsApp" };
        const links = Object.keys(names).filter((k) => share[k]).map((k) =>
          h("a", { href: share[k], target: "_blank", rel: "noopener noreferrer", "data-focus": `share:${k}`, text: names[k], "aria-label": `Share on ${names[k]}` })
        );
        if (links.length) links[0].setAttribute("aria-label", "Share by email");
        kids.push(h("div", { class: "row" }, field, this.copyButton(referral.link, "copy-ref")), h("div", { class: "share" }, links));
      }
      return this.section("Refer a friend", ...kids);
    }

    couponsSection() {
      const coupons = this.me.coupons || [];
      if (!coupons.length) return null;
      const items = coupons.map((coupon) =>
        h("li", null,
          h("span", { class: "what" },
            h("span", { text: coupon.code }),
            h("span", { class: "muted", text: [coupon.reward_title, coupon.expires_at ? `until ${day(coupon.expires_at)}` : ""].filter(Boolean).join(" · ") })),
          h("span", { class: "pts", text: coupon.used ? "Used" : "Not used yet" }))
      );
      return this.section("Your coupons", h("ul", { class: "items", "data-testid": "coupons" }, items));
    }

    birthdaySection() {
      const c = this.me.customer;
      if (c.birthday) return this.section("Your birthday", h("p", { "data-testid": "birthday", text: day(c.birthday) }));
      if (!c.birthday_editable) return null;
      const field = h("input", { type: "date", id: "tl-birthday", "data-focus": "birthday", required: true });
      const form = h("form", { class: "row", onsubmit: (event) => { event.preventDefault(); this.saveBirthday(field.value); } },
        field, h("button", { type: "submit", "data-focus": "birthday-save", text: "Save" }));
      return this.section("Your birthday",
        h("label", { for: "tl-birthday", class: "muted", text: "Tell us your birthday for a treat (you can set it once)." }),
        form,
        this.birthdayProblem && h("p", { class: "note problem", role: "alert", text: this.birthdayProblem }));
    }

    activitySection() {
      const items = this.activity.map((entry) =>
        h("li", null,
          h("span", { class: "what" }, h("span", { text: entry.reason || entry.kind }), h("span", { class: "muted", text: day(entry.created_at) })),
          h("span", { class: "pts", text: `${entry.points > 0 ? "+" : ""}${number(entry.points)}` }))
      );
      const list = items.length ? h("ul", { class: "items", "data-testid": "activity" }, items) : h("p", { class: "muted", text: "No activity yet." });
      return h("section", { class: "wide" }, h("h3", { text: "Activity" }), list);
    }

    // ----------------------------------------------------------------------- actions

    async redeem(reward) {
      const state = this.redeeming.get(reward.id) || {};
      if (state.pending) return;
      // The key names this intent: a retry after a lost answer sends the same key, and the
      // server answers it with the first spend instead of making a second.
      state.key = state.key || newKey();
      state.pending = true;
      state.problem = "";
      this.redeeming.set(reward.id, state);
      this.render();
      const body = { reward_id: reward.id };
      if (reward.type === "variable") body.points = reward.points_cost;
      const answer = await this.call("POST", "/me/redemptions", body, { "Idempotency-Key": state.key });
      state.pending = false;
      if (answer.ok && answer.body) {
        state.code = answer.body.code;
        state.key = null;
        // The button may be gone (the reward is no longer affordable): focus moves to the code.
        this.lastFocus = `copy:${reward.id}`;
        this.say(`${reward.title} redeemed. Your code is ${answer.body.code}.`);
        await this.loadMe();
      } else {
        // No answer or a 5xx/429 may hide a spend that happened: keep the key for the retry.
        const retry = answer.status === 0 || answer.status === 429 || answer.status >= 500;
        if (!retry) state.key = null;
        if (answer.status === 401) this.refused();
        state.problem = problemText(answer);
        this.say(state.problem);
      }
      this.render();
    }

    async claim(way) {
      const state = this.claiming.get(way.id) || {};
      if (state.pending) return;
      state.key = state.key || newKey();
      state.pending = true;
      this.claiming.set(way.id, state);
      this.render();
      const answer = await this.call("POST", `/me/actions/${encodeURIComponent(way.id)}`, {}, { "Idempotency-Key": state.key });
      state.pending = false;
      if (answer.ok && answer.body) {
        state.done = true;
        this.say(`You earned ${points(answer.body.points_awarded)}.`);
        await this.loadMe();
      } else {
        if (answer.status === 409) state.done = true;
        if (answer.status !== 0 && answer.status < 500) state.key = null;
        this.say(answer.status === 409 ? "You have already claimed this." : problemText(answer));
      }
      this.render();
    }

    async saveBirthday(value) {
      if (!value) return;
      const answer = await this.call("PUT", "/me/birthday", { birthday: value });
      if (answer.ok && answer.body) {
        this.me = answer.body;
        this.birthdayProblem = "";
        this.say("Birthday saved.");
      } else {
        this.birthdayProblem = answer.status === 409 ? "Your birthday is already set." : problemText(answer);
      }
      this.render();
    }
  }

  customElements.define("tally-loyalty", TallyLoyalty);

  // The one-tag install: the <script> element's data-* attributes become a <tally-loyalty>.
  if (script && script.dataset.widgetId) {
    const place = () => {
      const el = document.createElement("tally-loyalty");
      for (const [key, value] of Object.entries(script.dataset)) el.dataset[key] = value;
      document.body.append(el);
    };
    if (document.body) place();
    else document.addEventListener("DOMContentLoaded", place, { once: true });
  }
})();
