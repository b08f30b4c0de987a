-- wrk script: each request reads a random backtest between the ids in BST_BENCH_FIRST_ID and
-- BST_BENCH_LAST_ID, so the load spreads over the whole store instead of one row.
local first = tonumber(os.getenv("BST_BENCH_FIRST_ID"))
local last = tonumber(os.getenv("BST_BENCH_LAST_ID"))

function setup(thread)
    thread:set("seed", math.random(1, 1000000))
end

function init(args)
    math.randomseed(seed)
end

function request()
    return wrk.format("GET", "/api/v1/backtests/" .. math.random(first, last))
end
