// The usage page: the month's usage per day as a chart (uPlot), with the
// month's totals, the cost so far and projected, and the invoices.
import uPlot from "uplot";
import { InvoiceStatus, type Usage } from "@agentvoicebox/sdk";

import { $, cell, state, when } from "./ui.js";

// The metrics a tenant is billed for, as the chart can show them.
const metrics: [key: keyof Usage, label: string][] = [
  ["sessions", "Sessions"],
  ["audioInputMinutes", "Audio in (minutes)"],
  ["audioOutputMinutes", "Audio out (minutes)"],
  ["inputTokens", "Input tokens"],
  ["outputTokens", "Output tokens"],
  ["apiCalls", "API calls"],
  ["phoneMinutes", "Phone (minutes)"],
];

let days: Usage[] = [];
// Each day's usage is a bar.
const bars = uPlot.paths.bars!({ size: [0.7, 40], align: 1 });
let chart: uPlot | undefined;

const money = (m?: { currency: string; amountMinor: bigint }) =>
  m ? new Intl.NumberFormat(undefined, { style: "currency", currency: m.currency || "USD" }).format(Number(m.amountMinor) / 100) : "";

const day = (t?: { seconds: bigint }) => (t ? new Date(Number(t.seconds) * 1000).toLocaleDateString() : "");

/** initUsage wires the metric picker. */
export function initUsage() {
  const pick = $<HTMLSelectElement>("usage-metric");
  pick.replaceChildren(...metrics.map(([key, label]) => Object.assign(document.createElement("option"), { value: key, textContent: label })));
  pick.addEventListener("change", draw);
}

/** showUsage loads and draws the month to date. */
export async function showUsage() {
  if (!state.avb) return;
  const [usage, cost, invoices] = await Promise.all([
    state.avb.billing.getUsage({}),
    state.avb.billing.getProjectedCost({}),
    state.avb.billing.listInvoices({ pageSize: 24 }),
  ]);
  days = usage.days;
  const total = usage.usage;
  $("usage-totals").replaceChildren(
    ...metrics.map(([key, label]) => {
      const tr = document.createElement("tr");
      cell(tr, label);
      cell(tr, Number(total?.[key] ?? 0).toLocaleString(undefined, { maximumFractionDigits: 1 }));
      return tr;
    }),
  );
  draw();
  $("cost-summary").textContent = `${money(cost.toDate)} so far this month on the ${cost.tier} plan; ${money(cost.projected)} projected by the end of the period (${day(cost.periodEndTime)}).`;
  $("cost-lines").replaceChildren(
    ...cost.toDateLines.map((l) => {
      const tr = document.createElement("tr");
      cell(tr, l.item.replaceAll("_", " "));
      cell(tr, l.quantity.toLocaleString(undefined, { maximumFractionDigits: 1 }));
      cell(tr, money(l.amount));
      return tr;
    }),
  );
  $("invoices").replaceChildren(
    ...invoices.invoices.map((i) => {
      const tr = document.createElement("tr");
      cell(tr, i.number);
      cell(tr, when(i.issueTime));
      cell(tr, InvoiceStatus[i.status].toLowerCase());
      cell(tr, money(i.total));
      const td = cell(tr, "");
      if (i.fileUrl.startsWith("https://")) {
        const a = Object.assign(document.createElement("a"), { href: i.fileUrl, textContent: "PDF", rel: "noopener" });
        a.setAttribute("aria-label", `Invoice ${i.number} as PDF`);
        td.append(a);
      }
      return tr;
    }),
  );
  $("invoices-empty").hidden = invoices.invoices.length > 0;
}

// draw charts the picked metric per day, and says the same in words.
function draw() {
  const key = $<HTMLSelectElement>("usage-metric").value as keyof Usage;
  const label = metrics.find(([k]) => k === key)?.[1] ?? key;
  const xs = days.map((d) => Number(d.startTime?.seconds ?? 0n));
  const ys = days.map((d) => Number(d[key] ?? 0));
  const box = $("usage-chart");
  box.dataset.points = String(ys.filter((y) => y > 0).length);
  box.setAttribute("aria-label", `${label} per day this month: ` + ys.map((y, i) => `${new Date(xs[i] * 1000).getUTCDate()}: ${y}`).join(", "));
  chart?.destroy();
  const width = Math.max(280, Math.min(900, box.clientWidth || 600));
  chart = new uPlot(
    {
      width,
      height: 220,
      // Each bar covers its day: the scale runs to the end of the last.
      scales: { x: { time: true, range: (_u, min, max) => [min, max + 86_400] }, y: { range: (_u, _min, max) => [0, Math.max(1, max) * 1.1] } },
      series: [{}, { label, stroke: "#2456c7", fill: "#2456c799", width: 1, paths: bars, points: { show: false } }],
      axes: [{}, { size: 60 }],
      legend: { show: false },
    },
    [xs, ys],
    box,
  );
}
