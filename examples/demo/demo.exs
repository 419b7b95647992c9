# A tour of the data layer: every record below lives on the Rust node, one actor per record.
require Ash.Query

node = Application.fetch_env!(:ash_gen_server, :node)
step = fn text -> IO.puts("\n== " <> text) end

step.("connecting to #{node}")

connect = fn connect, tries ->
  cond do
    Node.connect(node) -> :ok
    tries > 0 -> Process.sleep(200) && connect.(connect, tries - 1)
    true -> raise "cannot connect to #{node}"
  end
end

:ok = connect.(connect, 25)

IO.puts(
  "   hidden nodes: #{inspect(Node.list(:hidden))}   visible nodes: #{inspect(Node.list())}"
)

step.("creating books through Ash (each becomes an actor on the node)")

books =
  for {title, author, year} <- [
        {"Dune", "Frank Herbert", 1965},
        {"Neuromancer", "William Gibson", 1984},
        {"Foundation", "Isaac Asimov", 1951},
        {"Hyperion", "Dan Simmons", 1989},
        {"Solaris", "Stanislaw Lem", 1961}
      ] do
    Ash.create!(Demo.Book, %{title: title, author: author, year: year})
  end

Enum.each(books, &IO.puts("   #{&1.title} (#{&1.year})  id=#{&1.id}"))

step.("get by primary key (one call to one record's actor)")
dune = Ash.get!(Demo.Book, hd(books).id)
IO.puts("   #{dune.title} by #{dune.author}")

step.("filter year > 1960, sorted by year descending (evaluated inside the node)")

Demo.Book
|> Ash.Query.filter(year > 1960)
|> Ash.Query.sort(year: :desc)
|> Ash.read!()
|> Enum.each(&IO.puts("   #{&1.year}  #{&1.title}"))

step.("aggregates computed by the node")
IO.puts("   count=#{Ash.count!(Demo.Book)}  oldest=#{Ash.min!(Demo.Book, :year)}")

step.("update, then destroy")
dune = Ash.update!(dune, %{title: "Dune (first edition)"})
IO.puts("   renamed: #{dune.title}")
:ok = Ash.destroy!(Enum.at(books, 1))
IO.puts("   destroyed Neuromancer; #{Ash.count!(Demo.Book)} books left")

step.("the same records, seen through the raw protocol (no Ash needed)")
{:ok, info} = GenServer.call({:ash_gen_server, node}, {:info, Demo.Book})
IO.puts("   {:info, Demo.Book} -> #{inspect(info)}")
{:ok, pid} = AshGenServer.whereis(dune)
IO.puts("   Dune's actor is #{inspect(pid)}: #{inspect(GenServer.call(pid, :get))}")

step.("waiting for the books to expire (3 s without a touch)")
deadline = System.monotonic_time(:millisecond) + 20_000

wait = fn wait ->
  cond do
    Ash.count!(Demo.Book) == 0 ->
      :ok

    System.monotonic_time(:millisecond) > deadline ->
      raise "books did not expire in time"

    true ->
      Process.sleep(250)
      wait.(wait)
  end
end

# Counting touches no record, so it does not keep them alive.
Process.sleep(3_000)
wait.(wait)
IO.puts("\n== done: every book expired through its Ash destroy action")
