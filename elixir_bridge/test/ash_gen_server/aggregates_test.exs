defmodule AshGenServer.AggregatesTest do
  use ExUnit.Case, async: true

  alias AshGenServer.Aggregates

  @records [%{n: 3, s: "b"}, %{n: nil, s: "a"}, %{n: 1, s: "b"}, %{n: 3, s: nil}]

  test "runtime aggregates follow Ash's nil rules" do
    assert Aggregates.compute(@records, :count, nil, false, false, nil) == 4
    assert Aggregates.compute(@records, :count, :n, false, false, nil) == 3
    assert Aggregates.compute(@records, :count, :n, true, false, nil) == 2
    assert Aggregates.compute(@records, :sum, :n, false, false, nil) == 7
    assert Aggregates.compute(@records, :avg, :n, false, false, nil) == 7 / 3
    assert Aggregates.compute(@records, :min, :s, false, false, nil) == "a"
    assert Aggregates.compute(@records, :max, :n, false, false, nil) == 3
    assert Aggregates.compute(@records, :first, :n, false, false, nil) == 3
    assert Aggregates.compute(tl(@records), :first, :n, false, true, nil) == nil
    assert Aggregates.compute(@records, :list, :s, true, false, nil) == ["b", "a"]
    assert Aggregates.compute(@records, :list, :s, false, true, nil) == ["b", "a", "b", nil]
    assert Aggregates.compute([], :sum, :n, false, false, 0) == 0
    assert Aggregates.compute([], :exists, nil, false, false, nil) == false
  end

  test "decimals are summed as decimals" do
    records = [%{d: Decimal.new("1.5")}, %{d: Decimal.new("2.25")}]
    assert Decimal.equal?(Aggregates.compute(records, :sum, :d, false, false, nil), "3.75")
    assert Decimal.equal?(Aggregates.compute(records, :max, :d, false, false, nil), "2.25")
  end
end
